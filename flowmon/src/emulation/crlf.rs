//! `crlf`: the header the attacker injected, as a response splitting bug would send it. Tanner
//! answered `{param name: value}` with the CR LF kept, which no HTTP server may send; here the
//! value's first line is the parameter's header and each later `Name: value` line its own
//! header, so the attacker's `Set-Cookie` arrives as one. The body is empty, on the page.

use super::{Answer, Param};

pub fn emulate(param: &Param) -> Answer {
    let mut lines = param
        .value
        .split(['\r', '\n'])
        .filter(|line| !line.is_empty());
    let mut headers = Vec::new();
    if !param.value.starts_with(['\r', '\n'])
        && let Some(first) = lines.next()
        && is_token(&param.name)
        && is_value(first)
    {
        headers.push((param.name.clone(), first.to_owned()));
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if is_token(name) && is_value(value) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    Answer::Content {
        value: String::new(),
        page: true,
        headers: Some(headers),
    }
}

/// An HTTP header name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A header value a server may send: no control characters but tab.
fn is_value(value: &str) -> bool {
    value.chars().all(|c| c == '\t' || !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> Vec<(String, String)> {
        let param = Param {
            name: name.into(),
            value: value.into(),
        };
        match emulate(&param) {
            Answer::Content {
                value,
                page,
                headers,
            } => {
                assert_eq!((value.as_str(), page), ("", true));
                headers.expect("crlf's answer has its headers")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn injected_lines_become_headers() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            headers("to", "/home\r\nSet-Cookie: injected=1\r\nX-Test:  y "),
            [
                pair("to", "/home"),
                pair("Set-Cookie", "injected=1"),
                pair("X-Test", "y")
            ]
        );
        assert_eq!(
            headers("to", "\r\nSet-Cookie: a=b"),
            [pair("Set-Cookie", "a=b")]
        );
        assert_eq!(
            headers("bad name", "x\r\nno colon\r\nBad Name: z\r\nOk: \u{0}"),
            []
        );
    }
}
