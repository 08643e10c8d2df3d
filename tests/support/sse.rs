//! A Server-Sent Events client for the feed stream: reads the response body
//! chunk by chunk and splits it into events and comments.

use reqwest::{Method, Response};

use crate::TestDaemon;

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event: its `id` (if any) and its `data` lines joined by `\n`.
    Event {
        /// The event id.
        id: Option<String>,
        /// The data.
        data: String,
    },
    /// A comment line (heartbeats, and why a stream ended).
    Comment(String),
}

/// An open event stream.
pub struct SseStream {
    response: Response,
    buffer: String,
    pending: std::collections::VecDeque<SseItem>,
}

impl SseStream {
    /// Opens `path` on `daemon`, sending `Last-Event-ID` if given; panics
    /// unless it answers 200 with `text/event-stream`.
    pub async fn open(daemon: &TestDaemon, path: &str, last_event_id: Option<&str>) -> Self {
        let mut request = daemon
            .request(Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            pending: Default::default(),
        }
    }

    /// The next item; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<SseItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            // Blocks end with a blank line.
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                self.pending.extend(parse(&block));
                continue;
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }

    /// The next event (skipping comments); `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<(Option<String>, String)> {
        loop {
            match self.next().await? {
                SseItem::Event { id, data } => return Some((id, data)),
                SseItem::Comment(_) => {}
            }
        }
    }
}

/// The items of one block.
fn parse(block: &str) -> Vec<SseItem> {
    let mut items = Vec::new();
    let mut id = None;
    let mut data: Option<String> = None;
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            items.push(SseItem::Comment(comment.trim_start().to_owned()));
        } else if let Some(value) = field(line, "id") {
            id = Some(value.to_owned());
        } else if let Some(value) = field(line, "data") {
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    if let Some(data) = data {
        items.push(SseItem::Event { id, data });
    }
    items
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let value = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(value.strip_prefix(' ').unwrap_or(value))
}
