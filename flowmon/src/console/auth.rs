//! Who may read the console: everyone when no token is set; with `--api-token`, a browser that
//! logged in with it (an HttpOnly cookie then holds a secret this process drew at start, never
//! the token itself) or a client sending the read API's `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE},
    },
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::pages;
use crate::api::same;

/// The cookie a login sets.
const COOKIE_NAME: &str = "flowmon_console";

#[derive(Clone)]
pub struct Auth {
    inner: Option<Arc<Secrets>>,
}

struct Secrets {
    token: String,
    /// The cookie's value: random, valid until the process ends.
    session: String,
}

impl Auth {
    /// `None` or an empty token: no login.
    pub fn new(token: Option<String>) -> Self {
        let inner = token.filter(|token| !token.is_empty()).map(|token| {
            Arc::new(Secrets {
                token,
                session: format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ),
            })
        });
        Self { inner }
    }

    pub fn required(&self) -> bool {
        self.inner.is_some()
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(secrets) = &self.inner else {
            return true;
        };
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if bearer.is_some_and(|given| same(given.as_bytes(), secrets.token.as_bytes())) {
            return true;
        }
        cookie(headers, COOKIE_NAME)
            .is_some_and(|given| same(given.as_bytes(), secrets.session.as_bytes()))
    }
}

/// The value of cookie `name` among the request's cookies.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Lets a request through, or refuses it: a page is sent to the login form, anything else
/// (the figures the overview fetches) gets 401.
pub async fn require(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if auth.admits(request.headers()) {
        return next.run(request).await;
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    if path.starts_with("/api/") {
        let mut refused = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        refused
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return refused;
    }
    let login = format!(
        "/login?next={}",
        form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
    );
    see_other(&login)
}

fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Where to go after logging in: a path of this console, never another site.
fn local_path(next: Option<&str>) -> &str {
    next.filter(|next| {
        next.starts_with('/') && !next.starts_with("//") && !next.contains(['\\', '\r', '\n'])
    })
    .unwrap_or("/")
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

pub async fn login_form(
    State(auth): State<Auth>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let next = form_field(query.as_bytes(), "next");
    if !auth.required() {
        return see_other(local_path(next.as_deref()));
    }
    pages::login(local_path(next.as_deref()), None).into_response()
}

pub async fn login(State(auth): State<Auth>, body: Bytes) -> Response {
    let next = form_field(&body, "next");
    let next = local_path(next.as_deref());
    let Some(secrets) = &auth.inner else {
        return see_other(next);
    };
    let token = form_field(&body, "token").unwrap_or_default();
    if !same(token.as_bytes(), secrets.token.as_bytes()) {
        let page = pages::login(next, Some("That is not the token."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let mut response = see_other(next);
    let cookie = format!(
        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
        secrets.session
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

pub async fn logout() -> Response {
    let mut response = see_other("/login");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("flowmon_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_a_login() {
        assert_eq!(local_path(Some("/flows?port=80")), "/flows?port=80");
        for elsewhere in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
        ] {
            assert_eq!(local_path(Some(elsewhere)), "/", "{elsewhere}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn the_cookie_or_the_bearer_token_admits() {
        let auth = Auth::new(Some("s3cret".into()));
        let secrets = auth.inner.clone().unwrap();
        let headers = |name, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(!auth.admits(&HeaderMap::new()));
        assert!(auth.admits(&headers(AUTHORIZATION, "Bearer s3cret")));
        assert!(!auth.admits(&headers(AUTHORIZATION, "Bearer s3cre")));
        let session = format!("a=b; {COOKIE_NAME}={}", secrets.session);
        assert!(auth.admits(&headers(COOKIE, &session)));
        // The token itself is no cookie.
        assert!(!auth.admits(&headers(COOKIE, &format!("{COOKIE_NAME}=s3cret"))));
        assert!(Auth::new(Some(String::new())).admits(&HeaderMap::new()));
        assert!(Auth::new(None).admits(&HeaderMap::new()));
    }
}
