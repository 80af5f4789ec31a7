//! A connection that LISTENs: what a site writes to its tables reaches
//! karuta at once, through NOTIFY.
//!
//! A [`Listener`] holds a connection of its own (outside the pool), LISTENs
//! on its channels and hands every notification to its owner as a
//! [`Notice`]. When the connection is lost (the database restarted, a
//! network cut) it connects again with backoff, LISTENs again and then sends
//! [`Notice::Subscribed`]: the owner reads its table in full at that point,
//! since changes made while nobody listened were not announced. Because
//! LISTEN comes first and the full read after, no change falls between the
//! two (a change both read and notified is applied twice, which a table of
//! upserts and deletes does not mind).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::Database;

/// What a listener tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// LISTEN is in place (first, or again after a reconnection): read
    /// everything now.
    Subscribed,
    /// The connection was lost; what is in memory stays as it is.
    Lost(String),
    /// A notification: its channel and payload.
    Notification { channel: String, payload: String },
}

/// A LISTEN connection kept up in the background; dropped, it stops.
pub struct Listener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Listener {
    /// Listens on `channels` of `db` (on the current tokio runtime), sending
    /// what happens to `notices` until it is dropped or `notices` closes.
    pub fn start(
        db: &Database,
        channels: &[String],
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Listener {
        let db = db.clone();
        let listen: String = channels
            .iter()
            .map(|c| format!("LISTEN \"{}\";", c.replace('"', "")))
            .collect();
        let task = tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                match listen_once(&db, &listen, &notices, &mut backoff).await {
                    Ok(()) => return, // the owner is gone
                    Err(why) => {
                        if notices.send(Notice::Lost(why)).is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        Listener { task }
    }
}

/// One connection's life: connect, LISTEN, say so, pass notifications on.
/// `Ok` when the owner has gone, `Err` when the connection did.
async fn listen_once(
    db: &Database,
    listen: &str,
    notices: &mpsc::UnboundedSender<Notice>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let (client, mut connection) = db
        .connect
        .connect(db.tls.clone())
        .await
        .map_err(|e| db.error(&e).to_string())?;
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    // The connection must be polled for the client's queries to go through;
    // its messages (notifications) come out of the same polling.
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            if messages_tx.send(message).is_err() {
                return;
            }
        }
    });
    let result = async {
        client
            .batch_execute(listen)
            .await
            .map_err(|e| db.error(&e).to_string())?;
        *backoff = BACKOFF_MIN;
        if notices.send(Notice::Subscribed).is_err() {
            return Ok(());
        }
        while let Some(message) = messages.recv().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let notice = Notice::Notification {
                        channel: n.channel().to_owned(),
                        payload: n.payload().to_owned(),
                    };
                    if notices.send(notice).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(db.error(&e).to_string()),
            }
        }
        Err(format!("{}: connection closed", db.target()))
    }
    .await;
    driver.abort();
    result
}
