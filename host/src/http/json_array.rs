//! A JSON array response written one element at a time: the body is
//! produced as the client reads it, so a page is never held twice (as
//! records and again as one serialised buffer).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `items` as a JSON array, serialised element by element while the body
/// is sent (chunked, without a `Content-Length`).
pub(crate) fn streamed<T: Serialize + Send + 'static>(items: Vec<T>) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json")];
    if items.is_empty() {
        return (headers, "[]").into_response();
    }
    let count = items.len();
    let chunks = items.into_iter().enumerate().map(move |(i, item)| {
        let mut chunk = vec![if i == 0 { b'[' } else { b',' }];
        serde_json::to_writer(&mut chunk, &item)?;
        if i + 1 == count {
            chunk.push(b']');
        }
        Ok::<_, serde_json::Error>(Bytes::from(chunk))
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
}
