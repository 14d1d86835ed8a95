//! The web view at `/ui`: three static files embedded in the binary. The page
//! holds no data itself; its script reads the same JSON API as the CLI
//! (`/v1/node`, `/v1/members`, `/v1/tasks`), so the API's token rules apply
//! to everything it shows. The page and its assets are served without a
//! token; a strict Content-Security-Policy allows only these same-origin
//! files to run, style and fetch.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Only same-origin script, style and fetches; no inline code, frames,
/// plugins, forms posting elsewhere or `<base>` rewriting.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// One embedded file.
#[derive(Clone, Copy, Debug)]
enum Asset {
    Index,
    Script,
    Style,
}

impl Asset {
    fn body_and_type(self) -> (&'static str, &'static str) {
        match self {
            Asset::Index => (INDEX_HTML, "text/html; charset=utf-8"),
            Asset::Script => (APP_JS, "text/javascript; charset=utf-8"),
            Asset::Style => (STYLE_CSS, "text/css; charset=utf-8"),
        }
    }

    fn response(self) -> Response {
        let (body, content_type) = self.body_and_type();
        let mut response = body.into_response();
        let headers = response.headers_mut();
        let fixed = [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// The routes of the web view, merged into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Asset::Index.response() }))
        .route("/ui/", get(|| async { Asset::Index.response() }))
        .route("/ui/app.js", get(|| async { Asset::Script.response() }))
        .route("/ui/style.css", get(|| async { Asset::Style.response() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_carries_the_policy_and_its_type() {
        for (asset, kind) in [
            (Asset::Index, "text/html"),
            (Asset::Script, "text/javascript"),
            (Asset::Style, "text/css"),
        ] {
            let response = asset.response();
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(content_type.starts_with(kind), "{asset:?}: {content_type}");
        }
    }

    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        // Inline script or style, and anything from another origin, would be
        // blocked by the policy: the page must not rely on them.
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "inline style in index.html");
        assert!(!lower.contains(" style="), "inline style attribute");
        let handler = lower.split(" on").skip(1).any(|rest| {
            let word: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !word.is_empty() && rest[word.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler attribute");
        assert!(!lower.contains("http://") && !lower.contains("https://"));
        let scripts = lower.matches("<script").count();
        let external = lower.matches("<script src=\"/ui/").count();
        assert_eq!(scripts, external, "every script is an embedded file");
        assert!(external >= 1);
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        assert!(APP_JS.contains("textContent"));
    }
}
