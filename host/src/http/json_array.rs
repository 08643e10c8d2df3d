//! A JSON array response written a chunk of elements at a time: the body
//! is produced as the client reads it, so a page is never held twice (as
//! records and again as one serialised buffer).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Bytes of serialised elements gathered before they are sent as one chunk:
/// a chunk per element would cost a write per element.
const CHUNK_BYTES: usize = 64 << 10;

/// `items` as a JSON array, serialised a chunk of elements at a time while
/// the body is sent (chunked, without a `Content-Length`).
pub(crate) fn streamed<T: Serialize + Send + 'static>(items: Vec<T>) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json")];
    if items.is_empty() {
        return (headers, "[]").into_response();
    }
    let mut items = items.into_iter().enumerate().peekable();
    let chunks = std::iter::from_fn(move || {
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK_BYTES {
            let (i, item) = items.next()?;
            chunk.push(if i == 0 { b'[' } else { b',' });
            if let Err(error) = serde_json::to_writer(&mut chunk, &item) {
                return Some(Err(error));
            }
            if items.peek().is_none() {
                chunk.push(b']');
                break;
            }
        }
        Some(Ok::<_, serde_json::Error>(Bytes::from(chunk)))
    });
    (
        headers,
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn elements_make_one_json_array() {
        assert_eq!(text(streamed(Vec::<u8>::new())).await, "[]");
        assert_eq!(text(streamed(vec![1])).await, "[1]");
        let rows = vec![
            serde_json::json!({"a": 1}),
            serde_json::json!("b"),
            serde_json::json!(null),
        ];
        assert_eq!(text(streamed(rows)).await, r#"[{"a":1},"b",null]"#);
    }

    #[tokio::test]
    async fn many_elements_span_several_chunks_and_stay_one_array() {
        let rows: Vec<String> = (0..5000).map(|i| format!("{i:0>40}")).collect();
        let parsed: Vec<String> =
            serde_json::from_str(&text(streamed(rows.clone())).await).unwrap();
        assert_eq!(parsed, rows);
    }
}
