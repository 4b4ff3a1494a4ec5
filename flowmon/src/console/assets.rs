//! The stylesheet and the script, built into the binary. Their URLs carry a digest of their
//! content, so a browser may keep them for good and still never runs an old script against a
//! new page.

use std::sync::OnceLock;

use axum::{
    extract::Path,
    http::{
        HeaderValue, StatusCode,
        header::{CACHE_CONTROL, CONTENT_TYPE},
    },
    response::{IntoResponse, Response},
};

pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

pub const CSS: &Asset = &Asset {
    name: "console.css",
    content_type: "text/css; charset=utf-8",
    body: include_str!("assets/console.css"),
};

pub const JS: &Asset = &Asset {
    name: "console.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("assets/console.js"),
};

const ALL: [&Asset; 2] = [CSS, JS];

/// FNV-1a of the content, as 16 hex digits.
fn digest(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `/assets/<name>?v=<digest>`.
pub fn url(asset: &Asset) -> &'static str {
    static URLS: OnceLock<[String; 2]> = OnceLock::new();
    let urls = URLS.get_or_init(|| {
        ALL.map(|asset| format!("/assets/{}?v={}", asset.name, digest(asset.body)))
    });
    let index = ALL
        .iter()
        .position(|known| known.name == asset.name)
        .expect("every asset is listed");
    &urls[index]
}

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ALL.into_iter().find(|asset| asset.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.body,
    )
        .into_response()
}
