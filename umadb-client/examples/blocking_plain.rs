//! The DCB flow with the blocking client over plain HTTP/2: read the consistency boundary,
//! decide, append on condition that the boundary has not changed, and repeat the append
//! safely when its outcome is unknown. No async runtime is needed by the caller.
//!
//! Start a server (`umadb --listen 127.0.0.1:50051 --db-path ./uma.db`), then:
//!
//! ```text
//! cargo run -p umadb-client --example blocking_plain -- [URL] [USERNAME]
//! ```
//!
//! The URL defaults to `$UMADB_URL`, then `http://127.0.0.1:50051`.

use std::time::Duration;

use umadb_client::blocking::Client;
use umadb_client::{AppendCondition, Error, Event, Position, Query, QueryItem, Uuid};

/// What the decision came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// We claimed the username; the event is at this position.
    Claimed(Position),
    /// Someone had already claimed it, at this position.
    Taken(Position),
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("UMADB_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_string());
    let username = args.next().unwrap_or_else(|| "alice".to_string());
    match run(&url, &username)? {
        Claim::Claimed(position) => println!("claimed {username:?} at position {position}"),
        Claim::Taken(position) => println!("{username:?} was already claimed at {position}"),
    }
    Ok(())
}

pub fn run(url: &str, username: &str) -> Result<Claim, Error> {
    let client = Client::connect(url)?;
    claim_username(&client, username)
}

/// A username may be claimed once: the consistency boundary is every claim of that name.
pub fn claim_username(client: &Client, username: &str) -> Result<Claim, Error> {
    let tag = format!("username:{username}");
    let boundary = Query::from_items([QueryItem::new(["UsernameClaimed"], [tag.clone()])]);
    // One uuid for this decision, kept across retries: it makes the append idempotent.
    let claim = Event::new("UsernameClaimed", [tag], username.as_bytes().to_vec())
        .with_uuid(Uuid::new_v4());
    loop {
        // Read: the decision model is the claims of this name, and the head it was read at.
        let mut response = client.read(Some(boundary.clone()), None, false, None)?;
        let mut first_claim = None;
        for event in response.by_ref() {
            first_claim = first_claim.or(Some(event?.position));
        }
        let head = response.head();

        // Decide.
        if let Some(position) = first_claim {
            return Ok(Claim::Taken(position));
        }

        // Append, failing if any claim of this name was recorded after what we read.
        let condition = AppendCondition {
            fail_if_events_match: boundary.clone(),
            after: head,
        };
        match append_until_known(client, &claim, &condition) {
            Ok(position) => return Ok(Claim::Claimed(position)),
            // Someone else decided first: read again and decide again.
            Err(Error::Integrity(_)) => continue,
            Err(other) => return Err(other),
        }
    }
}

/// Appends, and when the outcome is unknown (the connection broke after the request was
/// sent) repeats the identical request. That is safe: the event has a uuid and matches the
/// condition, so if the first attempt was recorded the server recognises the repeat and
/// returns the same position instead of writing it twice.
fn append_until_known(
    client: &Client,
    event: &Event,
    condition: &AppendCondition,
) -> Result<Position, Error> {
    let mut attempts = 0;
    let position = loop {
        attempts += 1;
        match client.append(vec![event.clone()], Some(condition.clone()), None) {
            Err(Error::Transport(reason)) if attempts < 5 => {
                eprintln!("append outcome unknown ({reason}); repeating it");
                std::thread::sleep(Duration::from_millis(200 * attempts));
            }
            outcome => break outcome?,
        }
    };
    // Show the idempotency: repeating the recorded append returns the same position.
    let repeated = client.append(vec![event.clone()], Some(condition.clone()), None)?;
    assert_eq!(repeated, position, "an idempotent append is recorded once");
    Ok(position)
}
