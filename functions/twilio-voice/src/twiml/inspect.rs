//! What inline TwiML can reach, checked before it is sent: the toll-fraud guard for documents we
//! did not build ourselves (an outbound event's `twiml`).
//!
//! The document is read with a real XML parser, the way Twilio reads it: entities and character
//! references resolved, CDATA as text, comments dropped, whitespace around values trimmed. Then,
//! over an allow-list of the elements Twilio runs (anything else, `<dial>` included, is refused):
//! - every `<Dial>` target, bare text or `<Number>`, must be E.164 and within the destination
//!   allow-list, exactly like an event's `to`;
//! - `<Sip>`, `<Client>`, `<Conference>`, `<Queue>`, `<Application>`, `<WhatsApp>`, `<Enqueue>`,
//!   `<Refer>` and `<Connect>` reach parties the allow-list cannot judge: refused unless the
//!   operator names them in `ALLOWED_TWIML_ELEMENTS`;
//! - every URL Twilio would fetch more TwiML from (`<Redirect>`, the `action`, `url`, `waitUrl`
//!   and `referUrl` attributes, whatever their case) must start with one of
//!   `ALLOWED_TWIML_URL_PREFIXES`, or that TwiML could dial anyone;
//! - `loop` on `<Say>` / `<Play>` is 1 to 10 (Twilio reads 0 as "forever").
//!
//! Where Twilio's reading could differ from ours (a comment splitting a number, text mixed with
//! nouns, a DOCTYPE, processing instructions) the document is refused rather than guessed at.

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::limits::{LOOP_COUNT, is_https_url};
use crate::phone::{AllowList, PhoneError, PhoneNumber, mask_digits};

/// The setting naming the URL prefixes Twilio may fetch TwiML from.
pub const URL_PREFIXES_SETTING: &str = "ALLOWED_TWIML_URL_PREFIXES";
/// The setting naming the gated elements the operator allows.
pub const GATED_ELEMENTS_SETTING: &str = "ALLOWED_TWIML_ELEMENTS";

/// Elements that connect the call to a party the destination allow-list cannot check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gated {
    Sip,
    Client,
    Conference,
    Queue,
    Application,
    WhatsApp,
    Enqueue,
    Refer,
    Connect,
}

impl Gated {
    pub const ALL: [Gated; 9] = [
        Gated::Sip,
        Gated::Client,
        Gated::Conference,
        Gated::Queue,
        Gated::Application,
        Gated::WhatsApp,
        Gated::Enqueue,
        Gated::Refer,
        Gated::Connect,
    ];

    /// The element's name in TwiML.
    pub fn name(self) -> &'static str {
        match self {
            Gated::Sip => "Sip",
            Gated::Client => "Client",
            Gated::Conference => "Conference",
            Gated::Queue => "Queue",
            Gated::Application => "Application",
            Gated::WhatsApp => "WhatsApp",
            Gated::Enqueue => "Enqueue",
            Gated::Refer => "Refer",
            Gated::Connect => "Connect",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// The gated elements an operator enabled (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatedElements(Vec<Gated>);

impl GatedElements {
    /// A comma-separated list of element names as TwiML spells them (`Sip,Client`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut enabled = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let gated = Gated::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Gated::ALL.iter().map(|g| g.name()).collect();
                format!(
                    "unknown element {name:?}; expected any of {}",
                    known.join(", ")
                )
            })?;
            enabled.push(gated);
        }
        Ok(Self(enabled))
    }

    pub fn allows(&self, gated: Gated) -> bool {
        self.0.contains(&gated)
    }
}

/// The https prefixes Twilio may fetch TwiML from. Empty (the setting unset) allows no URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPrefixes(Vec<String>);

/// Why a URL is not one Twilio may fetch TwiML from. The URL itself is not repeated: it is the
/// caller's input and may carry anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("{URL_PREFIXES_SETTING} is not set, so no URL to fetch TwiML from is allowed")]
    NoPrefixes,
    #[error("not an https:// URL under {URL_PREFIXES_SETTING} ({0})")]
    NotAllowed(String),
}

impl UrlPrefixes {
    /// No prefix: every URL is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// A comma-separated list of `https://host[/path]` prefixes; blanks between commas ignored.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut prefixes = Vec::new();
        for text in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = url::Url::parse(text).ok().filter(|_| is_https_url(text));
            let Some(parsed) = parsed else {
                return Err(format!("{text:?} is not an https:// URL"));
            };
            if parsed.query().is_some()
                || parsed.fragment().is_some()
                || !parsed.username().is_empty()
                || parsed.password().is_some()
            {
                return Err(format!(
                    "{text:?}: a prefix is scheme, host and path, without user, query or fragment"
                ));
            }
            prefixes.push(text.to_owned());
        }
        Ok(Self(prefixes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether Twilio may fetch TwiML from `url`: an https URL that starts with a prefix at a path
    /// boundary (`https://demo.twilio.com` does not cover `https://demo.twilio.com.evil.example`,
    /// nor `https://demo.twilio.com@evil.example`).
    pub fn check(&self, url: &str) -> Result<(), UrlRefused> {
        if self.0.is_empty() {
            return Err(UrlRefused::NoPrefixes);
        }
        let allowed = is_https_url(url)
            && !has_dot_segment(url)
            && self.0.iter().any(|p| {
                url.strip_prefix(p.as_str()).is_some_and(|rest| {
                    p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
                })
            });
        if allowed {
            Ok(())
        } else {
            Err(UrlRefused::NotAllowed(self.listed()))
        }
    }

    fn listed(&self) -> String {
        self.0.join(",")
    }
}

/// Whether the URL's path has a segment a URL parser collapses (`.`, `..`, also written
/// `%2e`, with `\` read as `/` as WHATWG parsers do for https): such a path can climb out of a
/// prefix's path (`https://host/twiml/../evil`), so it is refused rather than resolved.
fn has_dot_segment(url: &str) -> bool {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].split(['/', '\\']).any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// What inline TwiML may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub destinations: AllowList,
    pub urls: UrlPrefixes,
    pub gated: GatedElements,
}

/// Why a document is refused. Names and values that came from the document are shortened and
/// their digits masked: it is the caller's input and may hold phone numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("inline TwiML is not well-formed XML: {0}")]
    NotXml(String),
    #[error("inline TwiML must be one <Response> document")]
    NotResponse,
    #[error("inline TwiML may not hold {0} (Twilio's reading of it could differ from ours)")]
    Ambiguous(&'static str),
    #[error("<{element}> is not allowed inside <{parent}>")]
    Element { element: String, parent: String },
    #[error(
        "<{0}> reaches parties the allow-list cannot check; enable it in {GATED_ELEMENTS_SETTING}"
    )]
    Gated(&'static str),
    #[error("<{element}> may not hold text")]
    Text { element: String },
    #[error("<Dial> target: {0}")]
    Destination(PhoneError),
    #[error("<Dial> may hold a number or nouns, not both")]
    MixedDial,
    #[error("<{element}> {attribute}: {reason}")]
    Url {
        element: String,
        attribute: String,
        reason: UrlRefused,
    },
    #[error("<{element}> loop must be between 1 and 10 (0 is Twilio's \"forever\")")]
    Loop { element: String },
}

/// SSML Twilio reads inside `<Say>`: speech, nothing that reaches anyone.
const SSML: &[&str] = &[
    "break",
    "emphasis",
    "lang",
    "p",
    "phoneme",
    "prosody",
    "s",
    "say-as",
    "sub",
    "w",
    "amazon:domain",
    "amazon:effect",
];

/// Attributes whose value is a URL Twilio fetches TwiML from (compared without case or prefix).
const TWIML_URL_ATTRIBUTES: &[&str] = &["action", "url", "waiturl", "referurl"];

/// The role of an element, which decides its children, its text and its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Response,
    Say,
    Ssml,
    Play,
    Pause,
    Gather,
    Dial,
    Number,
    Record,
    Hangup,
    Redirect,
    Reject,
    Leave,
    Pay,
    Prompt,
    Parameter,
    /// An enabled gated element, or a part of one (`<Identity>`, `<Task>`, `<Stream>`, ...).
    Enabled {
        text: bool,
    },
}

impl Kind {
    fn holds_text(self) -> bool {
        matches!(
            self,
            Kind::Say
                | Kind::Ssml
                | Kind::Play
                | Kind::Dial
                | Kind::Number
                | Kind::Redirect
                | Kind::Enabled { text: true }
        )
    }
}

struct Frame {
    kind: Kind,
    name: String,
    text: String,
    has_elements: bool,
}

/// Shortens and masks a name taken from the document, for an error message.
fn shown(name: &str) -> String {
    let short: String = name.chars().take(40).collect();
    mask_digits(&short)
}

fn child(parent: Option<&Frame>, name: &str, policy: &Policy) -> Result<Kind, Refusal> {
    let gated = |g: Gated, text: bool| {
        if policy.gated.allows(g) {
            Ok(Kind::Enabled { text })
        } else {
            Err(Refusal::Gated(g.name()))
        }
    };
    let Some(parent) = parent else {
        return if name == "Response" {
            Ok(Kind::Response)
        } else {
            Err(Refusal::NotResponse)
        };
    };
    let kind = match (parent.kind, name) {
        (Kind::Response, "Say") | (Kind::Gather | Kind::Prompt, "Say") => Kind::Say,
        (Kind::Response | Kind::Gather | Kind::Prompt, "Play") => Kind::Play,
        (Kind::Response | Kind::Gather | Kind::Prompt, "Pause") => Kind::Pause,
        (Kind::Say | Kind::Ssml, n) if SSML.contains(&n) => Kind::Ssml,
        (Kind::Response, "Gather") => Kind::Gather,
        (Kind::Response, "Dial") => Kind::Dial,
        (Kind::Response, "Record") => Kind::Record,
        (Kind::Response, "Hangup") => Kind::Hangup,
        (Kind::Response, "Redirect") => Kind::Redirect,
        (Kind::Response, "Reject") => Kind::Reject,
        (Kind::Response, "Leave") => Kind::Leave,
        (Kind::Response, "Pay") => Kind::Pay,
        (Kind::Pay, "Prompt") => Kind::Prompt,
        (Kind::Pay, "Parameter") => Kind::Parameter,
        (Kind::Response, "Enqueue") => gated(Gated::Enqueue, true)?,
        (Kind::Response, "Refer") => gated(Gated::Refer, false)?,
        (Kind::Response, "Connect") => gated(Gated::Connect, false)?,
        (Kind::Dial, "Number") => Kind::Number,
        (Kind::Dial, "Sip") => gated(Gated::Sip, true)?,
        (Kind::Dial, "Client") => gated(Gated::Client, true)?,
        (Kind::Dial, "Conference") => gated(Gated::Conference, true)?,
        (Kind::Dial, "Queue") => gated(Gated::Queue, true)?,
        (Kind::Dial, "Application") => gated(Gated::Application, false)?,
        (Kind::Dial, "WhatsApp") => gated(Gated::WhatsApp, true)?,
        // Inside an enabled element, its own parts (the operator accepted where it leads).
        (
            Kind::Enabled { .. },
            "Identity" | "ApplicationSid" | "Task" | "Sip" | "Stream" | "Room" | "VirtualAgent"
            | "ConversationRelay" | "Conversation" | "Language" | "Parameter",
        ) => Kind::Enabled { text: true },
        _ => {
            let element = shown(name);
            // A gated name in a place it cannot go is reported as gated: the operator can act on it.
            return Err(match Gated::from_name(name) {
                Some(g) if !policy.gated.allows(g) => Refusal::Gated(g.name()),
                _ => Refusal::Element {
                    element,
                    parent: parent.name.clone(),
                },
            });
        }
    };
    Ok(kind)
}

fn check_attributes(start: &BytesStart<'_>, kind: Kind, policy: &Policy) -> Result<(), Refusal> {
    let element = shown(start.name().as_ref());
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| Refusal::NotXml(mask_digits(&e.to_string())))?;
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| Refusal::NotXml(mask_digits(&e.to_string())))?;
        let local = attribute.key.local_name().as_ref().to_ascii_lowercase();
        if TWIML_URL_ATTRIBUTES.contains(&local.as_str()) {
            policy
                .urls
                .check(value.trim_matches(xml_space))
                .map_err(|reason| Refusal::Url {
                    element: element.clone(),
                    attribute: shown(&local),
                    reason,
                })?;
        }
        if local == "loop" && matches!(kind, Kind::Say | Kind::Play) {
            let count = value.trim_matches(xml_space).parse::<u32>();
            if !count.is_ok_and(|n| LOOP_COUNT.contains(&n)) {
                return Err(Refusal::Loop {
                    element: element.clone(),
                });
            }
        }
    }
    Ok(())
}

fn xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn check_destination(text: &str, policy: &Policy) -> Result<(), Refusal> {
    let number = PhoneNumber::parse(text.trim_matches(xml_space)).map_err(Refusal::Destination)?;
    policy
        .destinations
        .check(&number)
        .map_err(Refusal::Destination)
}

/// Runs the checks that need an element's whole content, once it has closed.
fn close(frame: Frame, policy: &Policy) -> Result<(), Refusal> {
    let blank = frame.text.trim_matches(xml_space).is_empty();
    match frame.kind {
        Kind::Dial if frame.has_elements && !blank => Err(Refusal::MixedDial),
        Kind::Dial if !blank => check_destination(&frame.text, policy),
        Kind::Number => check_destination(&frame.text, policy),
        Kind::Redirect => policy
            .urls
            .check(frame.text.trim_matches(xml_space))
            .map_err(|reason| Refusal::Url {
                element: frame.name,
                attribute: "URL".to_owned(),
                reason,
            }),
        _ => Ok(()),
    }
}

/// Checks a TwiML document against `policy`; `Ok` means every party and URL it can reach is
/// allowed.
pub fn inspect(twiml: &str, policy: &Policy) -> Result<(), Refusal> {
    let mut reader = Reader::from_str(twiml);
    let config = reader.config_mut();
    config.check_comments = true;
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let not_xml = |e: &dyn std::fmt::Display| Refusal::NotXml(mask_digits(&e.to_string()));
    let mut stack: Vec<Frame> = Vec::new();
    let mut seen_root = false;
    let mut first = true;
    loop {
        let event = reader.read_event().map_err(|e| not_xml(&e))?;
        let was_first = std::mem::replace(&mut first, false);
        match event {
            Event::Decl(_) if was_first => {}
            Event::Decl(_) | Event::PI(_) => {
                return Err(Refusal::Ambiguous("processing instructions"));
            }
            Event::DocType(_) => return Err(Refusal::Ambiguous("a DOCTYPE")),
            Event::Start(_) | Event::Empty(_) if seen_root && stack.is_empty() => {
                return Err(Refusal::NotResponse);
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.name().as_ref().to_owned();
                let kind = child(stack.last(), &name, policy)?;
                check_attributes(start, kind, policy)?;
                if let Some(parent) = stack.last_mut() {
                    parent.has_elements = true;
                }
                seen_root = true;
                let frame = Frame {
                    kind,
                    name: shown(&name),
                    text: String::new(),
                    has_elements: false,
                };
                if matches!(event, Event::Start(_)) {
                    stack.push(frame);
                } else {
                    close(frame, policy)?;
                }
            }
            Event::End(_) => {
                let frame = stack.pop().ok_or(Refusal::NotResponse)?;
                close(frame, policy)?;
            }
            Event::Text(text) => push_text(&mut stack, &text.xml10_content())?,
            Event::CData(cdata) => push_text(&mut stack, &cdata.xml10_content())?,
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| not_xml(&e))? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&reference)
                        .ok_or_else(|| Refusal::NotXml("unknown entity".to_owned()))?
                        .to_owned(),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Comment(_) => {
                // A comment inside a value could split it in two; Twilio may read either half.
                let in_value = stack
                    .last()
                    .is_some_and(|f| matches!(f.kind, Kind::Dial | Kind::Number | Kind::Redirect));
                if in_value {
                    return Err(Refusal::Ambiguous("a comment inside a number or URL"));
                }
            }
            Event::Eof => {
                return if stack.is_empty() && seen_root {
                    Ok(())
                } else {
                    Err(Refusal::NotResponse)
                };
            }
        }
    }
}

fn push_text(stack: &mut [Frame], text: &str) -> Result<(), Refusal> {
    match stack.last_mut() {
        Some(frame) if frame.kind.holds_text() => {
            frame.text.push_str(text);
            Ok(())
        }
        Some(_) if text.trim_matches(xml_space).is_empty() => Ok(()),
        Some(frame) => Err(Refusal::Text {
            element: frame.name.clone(),
        }),
        None if text.trim_matches(xml_space).is_empty() => Ok(()),
        None => Err(Refusal::NotResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(gated: &str) -> Policy {
        Policy {
            destinations: AllowList::parse("+81,+1").unwrap(),
            urls: UrlPrefixes::parse("https://demo.twilio.com/, https://alerts.example.com")
                .unwrap(),
            gated: GatedElements::parse(gated).unwrap(),
        }
    }

    fn doc(body: &str) -> String {
        format!("<Response>{body}</Response>")
    }

    /// Toll fraud and cost abuse, one row each: (what, document, a phrase of the refusal).
    fn fraud() -> Vec<(&'static str, String, &'static str)> {
        let premium = "+882130000000";
        vec![
            (
                "bare Dial to a premium range",
                doc(&format!("<Dial>{premium}</Dial>")),
                "allowed prefixes",
            ),
            (
                "Number noun",
                doc(&format!("<Dial><Number>{premium}</Number></Dial>")),
                "allowed prefixes",
            ),
            (
                "second Number of a parallel dial",
                doc(&format!(
                    "<Dial><Number>+81312345678</Number><Number>{premium}</Number></Dial>"
                )),
                "allowed prefixes",
            ),
            (
                "plus as a character reference",
                doc("<Dial>&#43;882130000000</Dial>"),
                "allowed prefixes",
            ),
            (
                "digit as a hex reference",
                doc("<Dial>+&#x38;82130000000</Dial>"),
                "allowed prefixes",
            ),
            (
                "CDATA number",
                doc("<Dial><![CDATA[+882130000000]]></Dial>"),
                "allowed prefixes",
            ),
            (
                "number padded with newlines",
                doc("<Dial>\n  +882130000000\n</Dial>"),
                "allowed prefixes",
            ),
            (
                "UK number",
                doc("<Dial>+442071838750</Dial>"),
                "allowed prefixes",
            ),
            (
                "international dialling prefix",
                doc("<Dial>00882130000000</Dial>"),
                "E.164",
            ),
            ("no plus", doc("<Dial>882130000000</Dial>"), "E.164"),
            (
                "full-width digits",
                doc("<Dial>＋８８２１３０００００００</Dial>"),
                "E.164",
            ),
            (
                "formatted number",
                doc("<Dial>+81 3 1234 5678</Dial>"),
                "E.164",
            ),
            (
                "comment splitting a number",
                doc("<Dial>+81<!-- -->882130000000</Dial>"),
                "comment",
            ),
            (
                "number beside nouns",
                doc("<Dial>+81312345678<Number>+81312345679</Number></Dial>"),
                "not both",
            ),
            (
                "Sip",
                doc("<Dial><Sip>sip:premium@evil.example</Sip></Dial>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Client",
                doc("<Dial><Client>alice</Client></Dial>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Conference",
                doc("<Dial><Conference>room</Conference></Dial>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Queue",
                doc("<Dial><Queue>support</Queue></Dial>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Application",
                doc(
                    "<Dial><Application><ApplicationSid>AP0123</ApplicationSid></Application></Dial>",
                ),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "WhatsApp",
                doc(&format!("<Dial><WhatsApp>{premium}</WhatsApp></Dial>")),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Enqueue",
                doc("<Enqueue>support</Enqueue>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Refer",
                doc("<Refer><Sip>sip:x@evil.example</Sip></Refer>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Connect",
                doc(r#"<Connect><Stream url="wss://evil.example/s"/></Connect>"#),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Sip outside Dial",
                doc("<Sip>sip:x@evil.example</Sip>"),
                "ALLOWED_TWIML_ELEMENTS",
            ),
            (
                "Redirect elsewhere",
                doc("<Redirect>https://evil.example/twiml</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "Redirect over http",
                doc("<Redirect>http://demo.twilio.com/docs/voice.xml</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "relative Redirect",
                doc("<Redirect>/twiml</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "empty Redirect",
                doc("<Redirect/>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "host that extends the prefix",
                doc("<Redirect>https://alerts.example.com.evil.example/x</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "prefix as user info",
                doc("<Redirect>https://alerts.example.com@evil.example/x</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "backslash after the host",
                doc(r"<Redirect>https://alerts.example.com\@evil.example/x</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "port after the host",
                doc("<Redirect>https://alerts.example.com:8443/x</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "space inside the URL",
                doc("<Redirect>https://demo.twilio.com/ x</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "dot segments out of the prefix's path",
                doc("<Redirect>https://demo.twilio.com/../evil/twiml</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "percent-encoded dot segments",
                doc("<Redirect>https://demo.twilio.com/%2E%2e/evil</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "dot segment after a backslash",
                doc(r"<Redirect>https://demo.twilio.com/docs\..\..\evil</Redirect>"),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "single dot segment",
                doc(r#"<Gather action="https://demo.twilio.com/./x"><Say>x</Say></Gather>"#),
                "action",
            ),
            (
                "Gather action",
                doc(r#"<Gather action="https://evil.example/g"><Say>x</Say></Gather>"#),
                "action",
            ),
            (
                "Record action",
                doc(r#"<Record action="https://evil.example/r"/>"#),
                "action",
            ),
            (
                "Dial action",
                doc(r#"<Dial action="https://evil.example/d">+81312345678</Dial>"#),
                "action",
            ),
            (
                "Dial action in capitals",
                doc(r#"<Dial ACTION="https://evil.example/d">+81312345678</Dial>"#),
                "action",
            ),
            (
                "Dial referUrl",
                doc(r#"<Dial referUrl="https://evil.example/r">+81312345678</Dial>"#),
                "referurl",
            ),
            (
                "Number url (whisper)",
                doc(r#"<Dial><Number url="https://evil.example/w">+81312345678</Number></Dial>"#),
                "url",
            ),
            (
                "Pay action",
                doc(r#"<Pay action="https://evil.example/p"/>"#),
                "action",
            ),
            (
                "lower-case dial",
                doc(&format!("<dial>{premium}</dial>")),
                "not allowed",
            ),
            (
                "upper-case DIAL",
                doc(&format!("<DIAL>{premium}</DIAL>")),
                "not allowed",
            ),
            (
                "namespaced Dial",
                doc(&format!(r#"<t:Dial xmlns:t="urn:x">{premium}</t:Dial>"#)),
                "not allowed",
            ),
            (
                "Dial inside Say",
                doc(&format!("<Say>hi<Dial>{premium}</Dial></Say>")),
                "not allowed",
            ),
            (
                "Dial inside Gather",
                doc(&format!("<Gather><Dial>{premium}</Dial></Gather>")),
                "not allowed",
            ),
            (
                "unknown verb",
                doc(r#"<Start><Stream url="wss://evil.example"/></Start>"#),
                "not allowed",
            ),
            (
                "DOCTYPE entity",
                format!(
                    r#"<!DOCTYPE Response [<!ENTITY n "{premium}">]><Response><Dial>&n;</Dial></Response>"#
                ),
                "DOCTYPE",
            ),
            ("undeclared entity", doc("<Dial>&n;</Dial>"), "entity"),
            (
                "second root",
                format!("<Response/><Response><Dial>{premium}</Dial></Response>"),
                "one <Response>",
            ),
            (
                "Dial as the root",
                format!("<Dial>{premium}</Dial>"),
                "one <Response>",
            ),
            (
                "text outside the root",
                format!("{premium}<Response/>"),
                "one <Response>",
            ),
            (
                "unclosed Dial",
                format!("<Response><Dial>{premium}"),
                "one <Response>",
            ),
            (
                "processing instruction",
                doc("<?dial +882130000000?>"),
                "processing",
            ),
            ("Say forever", doc(r#"<Say loop="0">x</Say>"#), "loop"),
            (
                "Play eleven times",
                doc(r#"<Play loop="11">https://example.com/a.mp3</Play>"#),
                "loop",
            ),
        ]
    }

    /// Documents that look like the above but reach only allowed parties and URLs.
    fn look_alikes() -> Vec<(&'static str, String)> {
        vec![
            ("a premium number spoken, not dialled", doc("<Say>Call +882130000000 to win</Say>")),
            ("a Dial written as text", doc("<Say>&lt;Dial&gt;+882130000000&lt;/Dial&gt;</Say>")),
            ("SSML inside Say", doc(r#"<Say voice="Polly.Mizuki">番号は<break time="1s"/><say-as interpret-as="telephone">+882130000000</say-as>です。<prosody rate="slow"><s>以上</s></prosody></Say>"#)),
            ("Japanese number", doc("<Dial>+81312345678</Dial>")),
            ("number padded with whitespace", doc("<Dial>\n\t+81312345678 \n</Dial>")),
            ("number as references", doc("<Dial>&#43;81312345678</Dial>")),
            ("number in CDATA", doc("<Dial><![CDATA[+81312345678]]></Dial>")),
            ("parallel Numbers", doc("<Dial><Number>+81312345678</Number><Number>+14155550100</Number></Dial>")),
            ("Dial attributes", doc(r#"<Dial callerId="+15005550006" timeLimit="60" action="https://demo.twilio.com/dial-done"><Number statusCallback="https://evil.example/status">+81312345678</Number></Dial>"#)),
            ("Redirect under a prefix", doc("<Redirect>https://demo.twilio.com/docs/voice.xml</Redirect>")),
            ("Redirect to the prefix itself", doc("<Redirect> https://alerts.example.com </Redirect>")),
            ("Redirect with a path", doc("<Redirect method=\"POST\">https://alerts.example.com/next</Redirect>")),
            ("Redirect with a query", doc("<Redirect>https://alerts.example.com?step=2</Redirect>")),
            ("Gather to a prefix", doc(r#"<Gather action="https://demo.twilio.com/gather" numDigits="1"><Say>1を押してください。</Say><Pause length="2"/></Gather>"#)),
            ("audio is not TwiML", doc(r#"<Play loop="10">https://evil.example/a.mp3</Play>"#)),
            ("declaration, comments, every plain verb", r#"<?xml version="1.0" encoding="UTF-8"?><!-- hi --><Response><!-- a comment --><Say loop="3">Hi</Say><Pause/><Record maxLength="60"/><Hangup/><Reject/></Response>"#.to_owned()),
            ("empty Response", "<Response/>".to_owned()),
            ("whitespace around the root", "\n<Response>\n</Response>\n".to_owned()),
        ]
    }

    #[test]
    fn toll_fraud_is_refused() {
        let rows = fraud();
        assert!(rows.len() >= 20, "{} rows", rows.len());
        let policy = policy("");
        for (what, twiml, phrase) in rows {
            let refusal = inspect(&twiml, &policy).expect_err(what).to_string();
            assert!(refusal.contains(phrase), "{what}: {refusal}");
            assert!(
                !refusal.contains("2130000000"),
                "{what} echoes the number: {refusal}"
            );
        }
    }

    #[test]
    fn look_alikes_pass() {
        let policy = policy("");
        for (what, twiml) in look_alikes() {
            assert_eq!(inspect(&twiml, &policy), Ok(()), "{what}: {twiml}");
        }
    }

    #[test]
    fn gated_elements_pass_only_when_enabled() {
        let sip = doc(r#"<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>"#);
        assert_eq!(inspect(&sip, &policy("")), Err(Refusal::Gated("Sip")));
        assert_eq!(inspect(&sip, &policy("Sip")), Ok(()));
        // Enabling one does not enable another, nor lift the URL rule inside it.
        let client = doc("<Dial><Client>alice</Client></Dial>");
        assert_eq!(
            inspect(&client, &policy("Sip")),
            Err(Refusal::Gated("Client"))
        );
        let sip_url =
            doc(r#"<Dial><Sip url="https://evil.example/w">sip:desk@pbx.example.com</Sip></Dial>"#);
        assert!(matches!(
            inspect(&sip_url, &policy("Sip")),
            Err(Refusal::Url { .. })
        ));
        assert!(GatedElements::parse("Sip, Bogus").is_err());
        assert!(
            GatedElements::parse("sip").is_err(),
            "names are TwiML's, case included"
        );
    }

    #[test]
    fn without_prefixes_no_url_is_fetched() {
        let mut policy = policy("");
        policy.urls = UrlPrefixes::none();
        let err = inspect(
            &doc("<Redirect>https://demo.twilio.com/docs/voice.xml</Redirect>"),
            &policy,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ALLOWED_TWIML_URL_PREFIXES is not set"),
            "{err}"
        );
        assert_eq!(inspect(&doc("<Say>hi</Say>"), &policy), Ok(()));
    }

    #[test]
    fn prefixes_must_be_plain_https() {
        for bad in [
            "http://demo.twilio.com/",
            "demo.twilio.com",
            "https://demo.twilio.com/?x=1",
            "https://user@demo.twilio.com/",
            "https://demo.twilio.com/#f",
        ] {
            assert!(UrlPrefixes::parse(bad).is_err(), "{bad}");
        }
        let p = UrlPrefixes::parse("https://demo.twilio.com").unwrap();
        assert!(p.check("https://demo.twilio.com/docs/voice.xml").is_ok());
        assert!(p.check("https://demo.twilio.com.evil.example/").is_err());
        let path = UrlPrefixes::parse("https://alerts.example.com/twiml").unwrap();
        assert!(path.check("https://alerts.example.com/twiml/next").is_ok());
        assert!(path.check("https://alerts.example.com/twiml?x=1").is_ok());
        assert!(path.check("https://alerts.example.com/twimlevil").is_err());
        assert!(UrlPrefixes::parse(" , ").unwrap().is_empty());
    }
}
