//! Success acks, gathered and written together.
//!
//! Tasks finish in bursts (the JavaScript side reports a batch of outcomes at once). Acked one by
//! one, each ack became its own socket write on the client and its own read on the server, since
//! the connection task runs as soon as one ack is queued. The sender here waits until the burst
//! has queued its acks, then hands them to the client back to back, so they leave in one write.

use async_nats::{Client, Subject};
use tokio::{sync::mpsc, task::JoinHandle};

/// The payload of a positive acknowledgement.
const ACK: &[u8] = b"+ACK";

/// Queues success acks for the sender task. Cloned into every running delivery.
#[derive(Clone)]
pub struct AckSender {
    queue: mpsc::UnboundedSender<Subject>,
}

impl AckSender {
    /// Starts the sender task on `client`. It ends, after sending everything queued, when the
    /// last `AckSender` is dropped: await the handle before closing the connection.
    pub fn start(client: Client) -> (Self, JoinHandle<()>) {
        let (queue, queued) = mpsc::unbounded_channel();
        (AckSender { queue }, tokio::spawn(send_acks(client, queued)))
    }

    /// Queues an ack to a delivery's reply subject. Returns `false` when the sender is gone.
    pub fn ack(&self, reply: Subject) -> bool {
        self.queue.send(reply).is_ok()
    }
}

async fn send_acks(client: Client, mut queued: mpsc::UnboundedReceiver<Subject>) {
    let mut burst = Vec::new();
    while queued.recv_many(&mut burst, usize::MAX).await > 0 {
        // Let the rest of the burst (tasks woken together) queue its acks first.
        tokio::task::yield_now().await;
        while let Ok(reply) = queued.try_recv() {
            burst.push(reply);
        }
        for reply in burst.drain(..) {
            if let Err(err) = client.publish(reply, ACK.into()).await {
                tracing::warn!("ack not sent ({err}); the server will redeliver");
            }
        }
    }
}
