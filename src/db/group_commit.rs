//! Group commit: many callers hand rows to one task, which writes every row waiting (up to a
//! batch size) in one transaction and then tells each caller whether its row committed.
//!
//! While one batch commits the next one gathers, so the cost of a commit is shared by every row
//! that arrived meanwhile, and a caller still learns of its own row's durability before it goes
//! on (a delivery's job is marked done only once its attempt is recorded).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// A handle on a group-commit task; cheap to clone.
pub struct GroupCommit<T> {
    sender: mpsc::Sender<(T, oneshot::Sender<bool>)>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the task. `write` stores one batch (at most `max_batch` rows) in one transaction
    /// and returns whether it committed; it logs its own errors.
    pub fn start<F, Fut>(max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let (sender, mut waiting) = mpsc::channel::<(T, oneshot::Sender<bool>)>(4 * max_batch);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while waiting.recv_many(&mut batch, max_batch).await > 0 {
                let (rows, callers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let committed = write(rows).await;
                for caller in callers {
                    let _ = caller.send(committed);
                }
            }
        });
        Self { sender }
    }

    /// Hands `row` to the task; true once the transaction holding it has committed.
    pub async fn submit(&self, row: T) -> bool {
        let (committed, outcome) = oneshot::channel();
        if self.sender.send((row, committed)).await.is_err() {
            return false;
        }
        outcome.await.unwrap_or(false)
    }
}
