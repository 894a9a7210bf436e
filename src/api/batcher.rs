//! Group commit for single-message enqueues: `POST /v1/messages` requests without an `Idempotency-Key` that
//! arrive while earlier ones are being written share one `tidings.enqueue_many` call, so one transaction and one
//! WAL flush serve them all. Every request is its own transaction otherwise, and a disk that flushes in 3 ms then
//! caps them at a few hundred to a couple of thousand a second however many clients send.
//!
//! No request waits for company: a batch is whatever queued while the previous calls ran, so at low load each
//! request is written alone, at once. Each answer is the request's own: the ids come back in input order, and
//! when the shared call is refused (one message's validation) or fails, every request of the batch is written
//! again alone and gets its own answer, so a bad message never fails a good one.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{Error, Result};
use crate::store::{EnqueueApiOutcome, EnqueueApiParams, Store};

/// Most requests written by one call.
const MAX_BATCH: usize = 256;

/// Shared calls in flight at once (each holds a connection).
const IN_FLIGHT: usize = 4;

struct Pending {
    /// One message object, as the request sent it.
    message: String,
    reply: oneshot::Sender<Result<EnqueueApiOutcome>>,
}

/// Hands single messages to the group-commit loop; cheap to clone.
#[derive(Clone, Debug)]
pub struct EnqueueBatcher {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl EnqueueBatcher {
    /// Starts the loop on the current runtime; it ends when every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (queue, requests) = mpsc::channel(MAX_BATCH * IN_FLIGHT);
        tokio::spawn(run(store, requests));
        EnqueueBatcher { queue }
    }

    /// Enqueues one message (a JSON object's text), alone or with others that arrive meanwhile.
    pub async fn enqueue(&self, message: String) -> Result<EnqueueApiOutcome> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { message, reply })
            .await
            .map_err(|_| Error::Other("the enqueue batcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Other("the enqueue batcher has stopped".into()))?
    }
}

async fn run(store: Store, mut requests: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = requests.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            write(&store, batch).await;
            drop(slot);
        });
    }
}

async fn write(store: &Store, batch: Vec<Pending>) {
    if batch.len() > 1 {
        let mut json =
            String::with_capacity(batch.iter().map(|p| p.message.len() + 1).sum::<usize>() + 1);
        json.push('[');
        for (i, p) in batch.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&p.message);
        }
        json.push(']');
        if let Ok(EnqueueApiOutcome::Inserted(ids)) = alone(store, &json).await
            && ids.len() == batch.len()
        {
            for (p, id) in batch.into_iter().zip(ids) {
                let _ = p.reply.send(Ok(EnqueueApiOutcome::Inserted(vec![id])));
            }
            return;
        }
        // Refused or failed together: each on its own, for its own answer.
    }
    for p in batch {
        let answer = alone(store, &format!("[{}]", p.message)).await;
        let _ = p.reply.send(answer);
    }
}

async fn alone(store: &Store, json: &str) -> Result<EnqueueApiOutcome> {
    store
        .message_enqueue_api(&EnqueueApiParams {
            messages_json: json,
            idempotency: None,
        })
        .await
}
