//! What a box implements so the control server can answer: one method per request.

use std::net::IpAddr;

use crate::keys::KeyExport;
use crate::protocol::{
    CfReport, ConnListReport, ControlError, DctReport, IkeListReport, Request, Response,
    SaListReport, StatusReport, TakeoverReport,
};

/// A box's answers. Methods take `&mut self`: the server calls them from its one thread.
pub trait ControlHandler: Send {
    /// Role, DVIPAs, peers and links.
    fn status(&mut self) -> Result<StatusReport, ControlError>;
    /// The SAD or shadow SA cache, without keys.
    fn sa_list(&mut self) -> Result<SaListReport, ControlError>;
    /// The DCT.
    fn dct_list(&mut self) -> Result<DctReport, ControlError>;
    /// IKE SAs.
    fn ike_list(&mut self) -> Result<IkeListReport, ControlError>;
    /// Configured connections.
    fn conn_list(&mut self) -> Result<ConnListReport, ControlError>;
    /// The CF.
    fn cf_show(&mut self) -> Result<CfReport, ControlError>;
    /// A planned takeover of `dvipa`.
    fn takeover(&mut self, dvipa: IpAddr) -> Result<TakeoverReport, ControlError>;
    /// Keys of the SAs this box holds.
    fn keys_export(&mut self) -> Result<KeyExport, ControlError>;
    /// The Prometheus text exposition.
    fn metrics(&mut self) -> Result<String, ControlError>;
}

/// Calls the handler method that answers `request`.
pub fn dispatch(
    handler: &mut dyn ControlHandler,
    request: Request,
) -> Result<Response, ControlError> {
    Ok(match request {
        Request::Status => Response::Status(handler.status()?),
        Request::SaList => Response::SaList(handler.sa_list()?),
        Request::DctList => Response::DctList(handler.dct_list()?),
        Request::IkeList => Response::IkeList(handler.ike_list()?),
        Request::ConnList => Response::ConnList(handler.conn_list()?),
        Request::CfShow => Response::CfShow(handler.cf_show()?),
        Request::Takeover { dvipa } => Response::Takeover(handler.takeover(dvipa)?),
        Request::KeysExport => Response::KeysExport(handler.keys_export()?),
        Request::Metrics => Response::Metrics(crate::protocol::MetricsText {
            text: handler.metrics()?,
        }),
    })
}
