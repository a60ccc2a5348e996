//! Control requests relayed from the socket's thread to the thread that owns a box's state.
//!
//! A box's live state (its SA tables, cores and ports) belongs to one polling loop; the control
//! server and the metrics endpoint run on threads of their own. A [`Relay`] is the handler those
//! threads use: it sends each request, with a context the loop needs to tell boxes apart (a box
//! index, or `()` for a process that runs one box), over a channel, and waits for the loop's
//! answer. The loop takes the waiting [`Query`]s between its rounds, answers each from its live
//! state and never blocks on the socket. Dropping the loop's receiver makes every waiting
//! request fail at once with a clear reason rather than time out.

use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use crate::handler::ControlHandler;
use crate::keys::KeyExport;
use crate::metrics::MetricsSource;
use crate::protocol::{
    CfReport, ConnListReport, ControlError, DctReport, IkeListReport, Request, Response,
    SaListReport, StatusReport, TakeoverReport,
};

/// One request on its way to the loop, and where its answer goes.
#[derive(Debug)]
pub struct Query<C> {
    /// Which box of the loop's the request is for.
    pub context: C,
    /// The request.
    pub request: Request,
    reply: SyncSender<Result<Response, ControlError>>,
}

impl<C> Query<C> {
    /// Sends the answer back. The asker may have timed out and gone: nothing to do then.
    pub fn answer(self, answer: Result<Response, ControlError>) {
        let _ = self.reply.send(answer);
    }
}

/// The loop's end of the requests.
pub type Queries<C> = Receiver<Query<C>>;

/// A request channel: the loop keeps the receiver, relays are made from the sender.
pub fn channel<C>() -> (Sender<Query<C>>, Queries<C>) {
    mpsc::channel()
}

/// A handler that passes each request to the loop and waits for its answer.
#[derive(Debug, Clone)]
pub struct Relay<C> {
    context: C,
    queries: Sender<Query<C>>,
    timeout: Duration,
    /// What the loop is, for error messages ("the demo", "box MVS1").
    owner: String,
}

impl<C: Clone + Send + 'static> Relay<C> {
    /// A relay of requests for `context` to the loop behind `queries`, waiting at most `timeout`
    /// for each answer. `owner` names the loop in error messages.
    pub fn new(context: C, queries: Sender<Query<C>>, timeout: Duration, owner: &str) -> Self {
        Relay {
            context,
            queries,
            timeout,
            owner: owner.to_owned(),
        }
    }

    /// Asks the loop and waits for its answer.
    pub fn ask(&self, request: Request) -> Result<Response, ControlError> {
        let name = request.name();
        let gone = || ControlError::Failed {
            request: name.into(),
            reason: format!("{} is shutting down", self.owner),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let query = Query {
            context: self.context.clone(),
            request,
            reply,
        };
        self.queries.send(query).map_err(|_| gone())?;
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
            Err(RecvTimeoutError::Timeout) => Err(ControlError::Failed {
                request: name.into(),
                reason: format!("{} did not answer within {:?}", self.owner, self.timeout),
            }),
        }
    }

    fn other_answer(&self, request: &str) -> ControlError {
        ControlError::Failed {
            request: request.into(),
            reason: format!("{} answered another request", self.owner),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> Relay<C> {
    /// The metrics endpoint's source: each scrape asks the loop like a socket request. The
    /// endpoint has no error channel, so a failed scrape is a comment saying why.
    pub fn metrics_source(self) -> MetricsSource {
        Arc::new(move || match self.ask(Request::Metrics) {
            Ok(Response::Metrics(metrics)) => metrics.text,
            Ok(_) => format!(
                "# dvipsec: {} answered another request\n# EOF\n",
                self.owner
            ),
            Err(error) => format!("# dvipsec: no metrics: {error}\n# EOF\n"),
        })
    }
}

/// The report a request's answer must carry; another variant is the loop's bug, told as such.
macro_rules! expect {
    ($self:ident, $request:expr, $variant:ident) => {{
        let request = $request;
        let name = request.name();
        match $self.ask(request)? {
            Response::$variant(report) => Ok(report),
            _ => Err($self.other_answer(name)),
        }
    }};
}

impl<C: Clone + Send + 'static> ControlHandler for Relay<C> {
    fn status(&mut self) -> Result<StatusReport, ControlError> {
        expect!(self, Request::Status, Status)
    }

    fn sa_list(&mut self) -> Result<SaListReport, ControlError> {
        expect!(self, Request::SaList, SaList)
    }

    fn dct_list(&mut self) -> Result<DctReport, ControlError> {
        expect!(self, Request::DctList, DctList)
    }

    fn ike_list(&mut self) -> Result<IkeListReport, ControlError> {
        expect!(self, Request::IkeList, IkeList)
    }

    fn conn_list(&mut self) -> Result<ConnListReport, ControlError> {
        expect!(self, Request::ConnList, ConnList)
    }

    fn cf_show(&mut self) -> Result<CfReport, ControlError> {
        expect!(self, Request::CfShow, CfShow)
    }

    fn takeover(&mut self, dvipa: IpAddr) -> Result<TakeoverReport, ControlError> {
        expect!(self, Request::Takeover { dvipa }, Takeover)
    }

    fn keys_export(&mut self) -> Result<KeyExport, ControlError> {
        expect!(self, Request::KeysExport, KeysExport)
    }

    fn metrics(&mut self) -> Result<String, ControlError> {
        expect!(self, Request::Metrics, Metrics).map(|m| m.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MetricsText;

    const WAIT: Duration = Duration::from_secs(5);

    /// A loop on its own thread that answers `metrics` with the context it was asked for.
    fn spawn_loop(queries: Queries<u32>) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut answered = 0;
            while let Ok(query) = queries.recv() {
                // Every request gets a metrics report: right for `metrics`, and a wrong
                // variant for the others, which the relay must refuse.
                let text = format!("box {}\n", query.context);
                query.answer(Ok(Response::Metrics(MetricsText { text })));
                answered += 1;
            }
            answered
        })
    }

    #[test]
    fn requests_reach_the_loop_with_their_context_and_answers_come_back() {
        let (sender, queries) = channel();
        let worker = spawn_loop(queries);
        let mut first = Relay::new(1u32, sender.clone(), WAIT, "the test loop");
        let mut second = Relay::new(2u32, sender, WAIT, "the test loop");
        assert_eq!(first.metrics().unwrap(), "box 1\n");
        assert_eq!(second.metrics().unwrap(), "box 2\n");
        let scrape = second.clone().metrics_source();
        assert_eq!(scrape(), "box 2\n");
        // The loop answered `status` with a metrics report: the relay says so.
        let error = first.status().unwrap_err();
        assert!(
            matches!(&error, ControlError::Failed { request, reason }
                if request == "status" && reason.contains("answered another request")),
            "{error:?}"
        );
        drop((first, second, scrape));
        assert_eq!(worker.join().unwrap(), 4);
    }

    #[test]
    fn a_loop_that_is_gone_fails_requests_at_once() {
        let (sender, queries) = channel::<()>();
        drop(queries);
        let mut relay = Relay::new((), sender, WAIT, "box MVS1");
        let started = std::time::Instant::now();
        let error = relay.sa_list().unwrap_err();
        assert!(started.elapsed() < WAIT);
        assert_eq!(
            error,
            ControlError::Failed {
                request: "sa list".into(),
                reason: "box MVS1 is shutting down".into()
            }
        );
        let text = relay.metrics_source()();
        assert!(text.starts_with("# dvipsec: no metrics: "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_query_dropped_unanswered_fails_at_once_and_a_silent_loop_times_out() {
        let (sender, queries) = channel::<()>();
        let dropper = std::thread::spawn(move || {
            // Takes one query and drops it without answering, then keeps the next unanswered.
            let first = queries.recv().unwrap();
            drop(first);
            let kept = queries.recv().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(kept);
        });
        let relay = Relay::new((), sender.clone(), WAIT, "box T");
        let error = relay.ask(Request::CfShow).unwrap_err();
        assert!(error.to_string().contains("shutting down"), "{error}");
        let impatient = Relay::new((), sender, Duration::from_millis(50), "box T");
        let error = impatient.ask(Request::IkeList).unwrap_err();
        assert_eq!(
            error,
            ControlError::Failed {
                request: "ike list".into(),
                reason: "box T did not answer within 50ms".into()
            }
        );
        dropper.join().unwrap();
    }
}
