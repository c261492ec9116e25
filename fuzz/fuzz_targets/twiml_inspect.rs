//! The TwiML inspector: any bytes are refused, or form a document in which every party and URL
//! Twilio could reach is allowed. The oracle walks the accepted document on its own (a second,
//! simpler reading with quick-xml) instead of trusting the inspector's verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use twilio_voice::phone::AllowList;
use twilio_voice::twiml::inspect::{self, GatedElements, Policy, UrlPrefixes};

// A path prefix, so that a URL climbing out of it (dot segments) is something to find.
const PREFIX: &str = "https://demo.twilio.com/docs/";
/// Elements that reach parties no allow-list checks: none is enabled here.
const GATED: &[&str] = &[
    "Sip",
    "Client",
    "Conference",
    "Queue",
    "Application",
    "WhatsApp",
    "Enqueue",
    "Refer",
    "Connect",
];

fn e164_allowed(text: &str) -> bool {
    let t = text.trim_matches([' ', '\t', '\r', '\n']);
    let digits = t.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (t.starts_with("+81") || t.starts_with("+1"))
}

fn url_allowed(text: &str) -> bool {
    let t = text.trim_matches([' ', '\t', '\r', '\n']);
    let Ok(url) = url::Url::parse(t) else {
        return false;
    };
    // What Twilio would fetch after normalising: still under the prefix, as a parser resolves it
    // (dot segments, backslashes, percent-encoded dots).
    t.starts_with(PREFIX)
        && url.as_str().starts_with(PREFIX)
        && !t.chars().any(|c| c.is_whitespace() || c.is_control())
}

fuzz_target!(|data: &[u8]| {
    let Ok(twiml) = std::str::from_utf8(data) else {
        return;
    };
    let policy = Policy {
        destinations: AllowList::parse("+81,+1").unwrap(),
        urls: UrlPrefixes::parse(PREFIX).unwrap(),
        gated: GatedElements::default(),
    };
    if inspect::inspect(twiml, &policy).is_err() {
        return;
    }
    // Accepted: re-read it. Names of open elements, and the text directly inside each.
    let mut reader = Reader::from_str(twiml);
    let mut open: Vec<(String, String)> = Vec::new();
    let finish = |name: &str, text: &str, children: bool| match name {
        "Number" => assert!(e164_allowed(text), "Number {text:?}"),
        "Dial" if !children || !text.trim().is_empty() => {
            assert!(
                text.trim().is_empty() || e164_allowed(text),
                "Dial {text:?}"
            );
        }
        "Redirect" => assert!(url_allowed(text), "Redirect {text:?}"),
        _ => {}
    };
    let mut had_children: Vec<bool> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .expect("an accepted document is well-formed");
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = e.name().as_ref().to_owned();
                assert!(!GATED.contains(&name.as_str()), "gated <{name}> accepted");
                assert!(
                    open.is_empty() == (name == "Response"),
                    "<{name}> at depth {}",
                    open.len()
                );
                for a in e.attributes() {
                    let a = a.expect("attributes of an accepted document parse");
                    let key = a.key.local_name().as_ref().to_ascii_lowercase();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("attribute values of an accepted document resolve");
                    if ["action", "url", "waiturl", "referurl"].contains(&key.as_str()) {
                        assert!(url_allowed(&value), "<{name} {key}={value:?}>");
                    }
                    if key == "loop" && (name == "Say" || name == "Play") {
                        let n: u32 = value.trim().parse().expect("a numeric loop");
                        assert!((1..=10).contains(&n), "loop {n}");
                    }
                }
                if let Some(last) = had_children.last_mut() {
                    *last = true;
                }
                if matches!(event, Event::Start(_)) {
                    open.push((name, String::new()));
                    had_children.push(false);
                } else {
                    finish(&name, "", false);
                }
            }
            Event::End(_) => {
                let (name, text) = open.pop().expect("balanced");
                let children = had_children.pop().unwrap_or(false);
                finish(&name, &text, children);
            }
            Event::Text(t) => {
                if let Some((_, text)) = open.last_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, text)) = open.last_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().expect("char refs resolve") {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r)
                        .expect("only predefined entities")
                        .to_owned(),
                };
                if let Some((_, text)) = open.last_mut() {
                    text.push_str(&c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(open.is_empty());
});
