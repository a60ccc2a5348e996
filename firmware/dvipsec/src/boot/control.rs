//! The box's control socket (and Prometheus endpoint): requests reach the box's loop, which
//! answers them between rounds from its live state ([`super::answers`]).
//!
//! PLACEHOLDER OWNED BY THE CONTROL HELPER: replaced by the real implementation.

use std::sync::mpsc::{Receiver, SyncSender};

use dvipsec_control::{ControlError, Request, Response};

/// One request from the socket's thread and where its answer goes.
pub struct Query {
    pub request: Request,
    reply: SyncSender<Result<Response, ControlError>>,
}

impl Query {
    /// Sends the answer back to the socket's thread (gone already: nothing to do).
    pub fn answer(self, answer: Result<Response, ControlError>) {
        let _ = self.reply.send(answer);
    }
}

/// The loop's end of the requests.
pub type Queries = Receiver<Query>;
