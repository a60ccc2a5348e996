//! INFORMATIONAL requests from the peer: liveness checks and DELETE.

use super::{Discard, IkeSa, Incoming};
use crate::endpoint::Outputs;
use crate::event::{DeleteReason, Event};
use crate::wire::{DeletePayload, Exchange, Payload, ProtocolId};

impl IkeSa {
    pub(super) fn handle_informational(
        &mut self,
        incoming: &Incoming<'_>,
        out: &mut Outputs,
    ) -> Result<(), Discard> {
        let message_id = incoming.header.message_id;
        let deletes: Vec<&DeletePayload> = incoming
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Delete(d) => Some(d),
                _ => None,
            })
            .collect();
        if deletes
            .iter()
            .any(|d| d.protocol == ProtocolId::Ike.to_u8())
        {
            self.send_response(Exchange::Informational, message_id, &[], out)
                .map_err(|_| Discard::UnexpectedMessage)?;
            self.die(DeleteReason::PeerDelete, out);
            return Ok(());
        }
        let mut answer = Vec::new();
        for delete in deletes {
            if let Some(reply) = self.delete_children(delete, out) {
                answer.push(Payload::Delete(reply));
            }
        }
        self.send_response(Exchange::Informational, message_id, &answer, out)
            .map_err(|_| Discard::UnexpectedMessage)
    }

    /// Removes the children whose outbound SPIs the peer deleted; returns our inbound SPIs.
    fn delete_children(
        &mut self,
        delete: &DeletePayload,
        out: &mut Outputs,
    ) -> Option<DeletePayload> {
        if delete.protocol != ProtocolId::Esp.to_u8() || delete.spi_size != 4 {
            return None;
        }
        let mut ours = Vec::new();
        for spi in &delete.spis {
            let Ok(bytes) = <[u8; 4]>::try_from(spi.as_slice()) else {
                continue;
            };
            let outbound = u32::from_be_bytes(bytes);
            let Some(index) = self
                .children
                .iter()
                .position(|c| c.outbound_spi == outbound)
            else {
                continue;
            };
            let child = self.children.remove(index);
            ours.push(child.inbound_spi.to_be_bytes().to_vec());
            out.event(Event::ChildSaDeleted {
                ike_sa: self.id(),
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        (!ours.is_empty()).then_some(DeletePayload {
            protocol: ProtocolId::Esp.to_u8(),
            spi_size: 4,
            spis: ours,
        })
    }
}
