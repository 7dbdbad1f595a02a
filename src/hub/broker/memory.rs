//! The in-memory broker: the local core is the whole hub. Ids are `<epoch>-<seq>` (see the
//! hub's [Ids](crate::hub#ids)), or the publisher's own, found again by exact match.

use std::sync::Arc;

use super::super::{
    PrivateAccess, PublishError, SubscribeError, SubscribeRequest, Subscription,
    local::{Local, Stamp},
    select::Selection,
};
use crate::{EncodedEvent, Event, replay::UnknownId};

pub(in crate::hub) fn publish(
    local: &Arc<Local>,
    topics: &[&str],
    event: Event,
    private: bool,
) -> Result<EncodedEvent, PublishError> {
    match topics {
        [topic] if !private => local.publish_one(topic, Stamp::Next(event)),
        _ => local.publish_many(topics, Stamp::Next(event), private),
    }
}

pub(in crate::hub) fn subscribe(
    local: &Arc<Local>,
    selection: &Selection<'_>,
    request: &SubscribeRequest<'_>,
    on_unknown_id: UnknownId,
    access: Option<Arc<dyn PrivateAccess>>,
) -> Result<Subscription, SubscribeError> {
    match selection.single() {
        Some(topic) => {
            let request = SubscribeRequest { topic, ..*request };
            local.subscribe_one(&request, on_unknown_id, access)
        }
        None => local.subscribe_many(selection, request, on_unknown_id, access),
    }
}
