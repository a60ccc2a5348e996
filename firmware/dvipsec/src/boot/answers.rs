//! The box's answers to control requests, from the running [`Runtime`].
//!
//! PLACEHOLDER OWNED BY THE CONTROL HELPER: replaced by the real implementation.

use dvipsec_control::{ControlError, Request, Response};

use super::runtime::Runtime;

/// The answer of the box to `request`.
pub fn respond(runtime: &Runtime, request: Request) -> Result<Response, ControlError> {
    Err(ControlError::Unsupported {
        request: request.name().into(),
        reason: format!("{} answers no control requests yet", runtime.node()),
    })
}
