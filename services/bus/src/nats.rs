//! The production bus: NATS JetStream.
//!
//! Events go to the stream `<PREFIX>_EVENTS` on subjects `<prefix>.events.<aggregate kind>`, each
//! with `Nats-Msg-Id` set to the event id, so a relay that republishes after a crash is
//! de-duplicated by JetStream. Subscribers use ordered consumers, which detect their own gaps.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures::StreamExt;

use crate::{Bus, BusError, BusMessage, Delivery, Subscription};

pub struct NatsBus {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    /// Subject prefix of this installation: several NullOps installations may share one NATS.
    prefix: String,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    /// Connects and creates the stream `<PREFIX>_EVENTS` on subjects `<prefix>.events.>`.
    /// `prefix` is a NATS token: letters, digits, `-` and `_`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(BusError::Unavailable(format!("NATS prefix {prefix:?}: use letters, digits, '-' and '_'")));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot reach NATS at {url}: {e}")))?;
        let jetstream = jetstream::new(client);
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{}_EVENTS", prefix.to_uppercase().replace('-', "_")),
                subjects: vec![format!("{prefix}.events.>")],
                storage: stream::StorageType::File,
                // The store keeps everything; the bus only needs to cover consumers' short absences.
                max_age: Duration::from_secs(7 * 24 * 3600),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(NatsBus { jetstream, stream, prefix: prefix.to_owned() })
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError> {
        // Send all, then wait for all acks: one round trip per batch, not per message.
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            let payload = postcard::to_allocvec(m).map_err(unavailable)?;
            let publish = jetstream::context::Publish::build().message_id(m.event.event_id.to_string()).payload(payload.into());
            let subject = format!("{}.events.{}", self.prefix, m.event.stream_id.kind());
            acks.push(self.jetstream.send_publish(subject, publish).await.map_err(unavailable)?);
        }
        for ack in acks {
            ack.await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription, BusError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::New,
                filter_subject: format!("{}.events.>", self.prefix),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(Box::pin(messages.map(|m| match m {
            Ok(m) => match postcard::from_bytes::<BusMessage>(&m.payload) {
                Ok(decoded) => Delivery::Event(Box::new(decoded)),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable bus message; catching up from the store");
                    Delivery::Gap
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "bus subscription error; catching up from the store");
                Delivery::Gap
            }
        })))
    }
}
