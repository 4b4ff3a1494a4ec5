//! `xxe_injection`: the XML loaded as Tanner's sandbox loaded it (`DOMDocument::loadXML` with
//! `LIBXML_NOENT | LIBXML_DTDLOAD`, then echoed): entities declared in the internal subset are
//! expanded, `SYSTEM "file:///..."` (or a bare path, or `php://filter/...`) from the simulated
//! file system, and the document's text is printed (`page` false). Remote entities and
//! external DTDs (out-of-band XXE) are recorded, never fetched, and fail to load as libxml
//! says. The XML is read with `xmlparser`, a tokenizer that reports entity declarations; the
//! expansion is bounded in depth and size (an entity bomb gets libxml's loop error).

use std::collections::HashMap;

use xmlparser::{ElementEnd, EntityDefinition, ExternalId, Token, Tokenizer};

use super::{Answer, Machine, budget::Overrun, fs, lfi, php};

/// Entities expanded inside each other at most.
const MAX_NESTING: usize = 8;

enum Entity {
    Text(String),
    System(String),
}

pub fn emulate(machine: &mut Machine<'_>, value: &str) -> Result<Answer, Overrun> {
    Ok(Answer::text(load(machine, value)?, false))
}

/// Whether `value` is XML that declares entities: what an XXE probe sends.
pub fn declares_entities(value: &str) -> bool {
    value.to_ascii_uppercase().contains("<!ENTITY")
}

/// What loading `xml` prints: libxml's warnings, then the document's text.
pub fn load(machine: &mut Machine<'_>, xml: &str) -> Result<String, Overrun> {
    let mut loader = Loader {
        machine,
        entities: HashMap::new(),
        text: String::new(),
        warnings: String::new(),
    };
    loader.load(xml)?;
    let output = loader.warnings + &loader.text;
    machine.evidence.code(xml, &output);
    Ok(output)
}

struct Loader<'m, 'a> {
    machine: &'m mut Machine<'a>,
    entities: HashMap<String, Entity>,
    text: String,
    warnings: String,
}

/// Why loading stopped: libxml's message.
struct Failed(String);

impl Loader<'_, '_> {
    fn warn(&mut self, message: &str) {
        let line = php::script_message(
            self.machine,
            "Warning",
            &format!("DOMDocument::loadXML(): {message} in Entity, line: 1"),
        );
        self.warnings.push_str(&line);
    }

    fn load(&mut self, xml: &str) -> Result<(), Overrun> {
        let mut depth = 0usize;
        for token in Tokenizer::from(xml) {
            self.machine.budget.step()?;
            let token = match token {
                Ok(token) => token,
                Err(err) => {
                    self.warn(&format!("{err}"));
                    self.text.clear();
                    return Ok(());
                }
            };
            let result = match token {
                Token::EntityDeclaration {
                    name, definition, ..
                } => {
                    let entity = match definition {
                        EntityDefinition::EntityValue(value) => {
                            Entity::Text(value.as_str().to_owned())
                        }
                        EntityDefinition::ExternalId(
                            ExternalId::System(uri) | ExternalId::Public(_, uri),
                        ) => {
                            let uri = uri.as_str().to_owned();
                            if is_remote(&uri) {
                                self.machine.evidence.url(&uri);
                            }
                            Entity::System(uri)
                        }
                    };
                    self.entities.insert(name.as_str().to_owned(), entity);
                    Ok(())
                }
                Token::DtdStart { external_id, .. } | Token::EmptyDtd { external_id, .. } => {
                    if let Some(ExternalId::System(uri) | ExternalId::Public(_, uri)) = external_id
                    {
                        let uri = uri.as_str();
                        self.machine.evidence.url(uri);
                        self.warn(&format!("failed to load external entity \"{uri}\""));
                    }
                    Ok(())
                }
                Token::ElementStart { .. } => {
                    depth += 1;
                    Ok(())
                }
                Token::ElementEnd { end, .. } => {
                    if matches!(end, ElementEnd::Close(..) | ElementEnd::Empty) {
                        depth = depth.saturating_sub(1);
                    }
                    Ok(())
                }
                Token::Text { text } if depth > 0 => self.expand(text.as_str(), 0),
                Token::Cdata { text, .. } => {
                    self.push(text.as_str());
                    Ok(())
                }
                _ => Ok(()),
            };
            match result {
                Ok(()) => {}
                Err(Stop::Overrun(overrun)) => return Err(overrun),
                Err(Stop::Failed(Failed(message))) => {
                    self.warn(&message);
                    self.text.clear();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, text: &str) {
        let room = self.machine.max_output.saturating_sub(self.text.len());
        self.text.push_str(&text[..text.floor_char_boundary(room)]);
    }

    /// Appends `text` with its references expanded.
    fn expand(&mut self, text: &str, nesting: usize) -> Result<(), Stop> {
        if nesting > MAX_NESTING || self.text.len() >= self.machine.max_output {
            return Err(Stop::Failed(Failed(
                "Detected an entity reference loop".into(),
            )));
        }
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            self.machine.budget.step()?;
            self.push(&rest[..at]);
            let after = &rest[at + 1..];
            let Some(end) = after.find(';') else {
                return Err(Stop::Failed(Failed("EntityRef: expecting ';'".into())));
            };
            let name = &after[..end];
            rest = &after[end + 1..];
            match name {
                "lt" => self.push("<"),
                "gt" => self.push(">"),
                "amp" => self.push("&"),
                "quot" => self.push("\""),
                "apos" => self.push("'"),
                _ if name.starts_with('#') => {
                    let code = match name.strip_prefix("#x") {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => name[1..].parse().ok(),
                    };
                    match code.and_then(char::from_u32) {
                        Some(c) => self.push(c.encode_utf8(&mut [0; 4])),
                        None => {
                            return Err(Stop::Failed(Failed(format!(
                                "xmlParseCharRef: invalid xmlChar value {}",
                                &name[1..]
                            ))));
                        }
                    }
                }
                _ => match self.entities.get(name) {
                    Some(Entity::Text(value)) => {
                        let value = value.clone();
                        self.expand(&value, nesting + 1)?;
                    }
                    Some(Entity::System(uri)) => {
                        let uri = uri.clone();
                        let content = self.external(name, &uri)?;
                        self.push(&content);
                    }
                    None => {
                        return Err(Stop::Failed(Failed(format!("Entity '{name}' not defined"))));
                    }
                },
            }
        }
        self.push(rest);
        Ok(())
    }

    /// The content of an external entity: a file of the simulated host, or nothing for what
    /// would have to be fetched.
    fn external(&mut self, name: &str, uri: &str) -> Result<String, Stop> {
        if is_remote(uri) {
            self.warn(&format!("failed to load external entity \"{uri}\""));
            return Ok(String::new());
        }
        let (filters, resource) = match lfi::filtered_resource(uri) {
            Some((filters, resource)) => (filters, resource),
            None => ("", uri),
        };
        let path = resource.strip_prefix("file://").unwrap_or(resource);
        let dir = self
            .machine
            .script
            .rsplit_once('/')
            .map_or("/", |(d, _)| d)
            .to_owned();
        let absolute = fs::normalise(&dir, path);
        match self.machine.files.read(&absolute) {
            Ok(text) => {
                self.machine.evidence.file_read(&absolute);
                Ok(lfi::apply_filters(filters, text))
            }
            Err(err) => {
                let line = php::script_message(
                    self.machine,
                    "Warning",
                    &format!("DOMDocument::loadXML({uri}): failed to open stream: {err}"),
                );
                self.warnings.push_str(&line);
                Err(Stop::Failed(Failed(format!(
                    "Failure to process entity {name}"
                ))))
            }
        }
    }
}

enum Stop {
    Failed(Failed),
    Overrun(Overrun),
}

impl From<Overrun> for Stop {
    fn from(overrun: Overrun) -> Self {
        Stop::Overrun(overrun)
    }
}

/// What libxml would have to fetch.
fn is_remote(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    [
        "http:", "https:", "ftp:", "gopher:", "jar:", "netdoc:", "expect:", "dict:", "ldap:",
    ]
    .iter()
    .any(|scheme| lower.starts_with(scheme))
}
