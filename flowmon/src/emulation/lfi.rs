//! `lfi`: the file a local file inclusion names, read from the simulated host as Tanner's
//! `cat` gave it (text/plain, `page` false). The path is cut at a NUL (`%00`, PHP before 5.3.4
//! did so), read relative to the script's directory with `../` and `//` resolved, and PHP's
//! stream wrappers are honoured: `php://filter/...resource=` with its filters (base64, rot13,
//! case), `file://`, and `data:` (whose PHP is evaluated, since `allow_url_include` is on). A
//! missing, unreadable or directory path prints PHP's warnings for the failed include.

use base64::Engine as _;

use super::{Answer, Machine, budget::Overrun, fs, php};

pub fn emulate(machine: &mut Machine<'_>, value: &str) -> Result<Answer, Overrun> {
    let target = value
        .split(['\0'])
        .next()
        .unwrap_or_default()
        .split("%00")
        .next()
        .unwrap_or_default();
    let output = include(machine, target)?;
    Ok(Answer::text(output, false))
}

/// `php://filter/FILTERS/resource=PATH`: the filters and the path.
pub fn filtered_resource(target: &str) -> Option<(&str, &str)> {
    const PREFIX: &str = "php://filter/";
    let rest = target
        .get(..PREFIX.len())?
        .eq_ignore_ascii_case(PREFIX)
        .then(|| &target[PREFIX.len()..])?;
    let at = rest.find("resource=")?;
    Some((&rest[..at], &rest[at + "resource=".len()..]))
}

/// `text` through the filters of a `php://filter` chain.
pub fn apply_filters(filters: &str, mut text: String) -> String {
    for filter in filters.split(['/', '|']) {
        let filter = filter
            .trim_start_matches("read=")
            .trim_start_matches("write=")
            .to_ascii_lowercase();
        text = match filter.as_str() {
            "convert.base64-encode" => {
                base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
            }
            "convert.base64-decode" => base64::engine::general_purpose::STANDARD
                .decode(text.trim().as_bytes())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default(),
            "string.rot13" => text.chars().map(php::rot13).collect(),
            "string.toupper" => text.to_uppercase(),
            "string.tolower" => text.to_lowercase(),
            _ => text,
        };
    }
    text
}

fn include(machine: &mut Machine<'_>, target: &str) -> Result<String, Overrun> {
    let lower = target.to_ascii_lowercase();
    if let Some((filters, resource)) = filtered_resource(target) {
        let text = match read(machine, resource)? {
            Ok(text) => text,
            Err(failure) => return Ok(failure),
        };
        return Ok(apply_filters(filters, text));
    }
    if let Some(data) = lower.strip_prefix("data:").map(|_| &target[5..]) {
        machine
            .evidence
            .url(&super::budget::cut(target.to_owned(), 256));
        let data = data.trim_start_matches("//");
        let Some((meta, payload)) = data.split_once(',') else {
            return Ok(php::include_failure(
                machine,
                target,
                "rfc2397: no comma in URL",
            ));
        };
        let decoded = if meta.ends_with(";base64") {
            match base64::engine::general_purpose::STANDARD.decode(payload.trim().as_bytes()) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => {
                    return Ok(php::include_failure(
                        machine,
                        target,
                        "rfc2397: unable to decode",
                    ));
                }
            }
        } else {
            percent_encoding::percent_decode_str(payload)
                .decode_utf8_lossy()
                .into_owned()
        };
        let output = php::render(machine, &decoded)?;
        machine.evidence.code(&decoded, &output);
        return Ok(output);
    }
    if let Some((scheme, _)) = lower.split_once("://")
        && scheme != "file"
    {
        let wrapper = &target[..scheme.len()];
        return Ok(php::script_message(
            machine,
            "Warning",
            &format!(
                "include(): Unable to find the wrapper \"{wrapper}\" - did you forget to enable it when you configured PHP?"
            ),
        ) + &php::include_failure(machine, target, "No such file or directory"));
    }
    let text = read(machine, target)?;
    Ok(match text {
        Ok(text) | Err(text) => text,
    })
}

/// The file's text, or what PHP prints when the include fails.
fn read(machine: &mut Machine<'_>, target: &str) -> Result<Result<String, String>, Overrun> {
    machine.budget.step()?;
    let path = target.strip_prefix("file://").unwrap_or(target);
    let dir = machine
        .script
        .rsplit_once('/')
        .map_or("/", |(dir, _)| dir)
        .to_owned();
    let absolute = fs::normalise(&dir, path);
    Ok(match machine.files.read(&absolute) {
        Ok(text) => {
            machine.evidence.file_read(&absolute);
            Ok(text)
        }
        Err(fs::FsError::IsDirectory) => Err(php::script_message(
            machine,
            "Notice",
            "include(): read of 8192 bytes failed with errno=21 Is a directory",
        )),
        Err(err) => Err(php::include_failure(machine, target, &err.to_string())),
    })
}
