//! The TwiML builder: whatever the text and attributes, the output parses as XML with exactly
//! one <Response> root, only the verbs that were built, and the text as given (less the
//! characters XML 1.0 forbids): nothing can be injected.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use quick_xml::events::Event;
use twilio_voice::twiml::{
    Dial, Gather, Method, Number, Pause, Play, Record, Redirect, Say, VoiceResponse,
};

#[derive(Debug, arbitrary::Arbitrary)]
enum Verb {
    Say {
        text: String,
        language: String,
        voice: String,
        /// Read as a telephone number (`<say-as>`), then more text.
        telephone: Option<(String, String)>,
    },
    Play(String),
    Pause(u32),
    Gather {
        action: String,
        prompt: String,
    },
    Dial {
        number: String,
        caller_id: String,
        /// A screening URL: the number becomes a `<Number>` noun.
        url: Option<String>,
    },
    Record(String),
    Redirect(String),
    Hangup,
}

const NAMES: &[&str] = &[
    "Response", "Say", "say-as", "Play", "Pause", "Gather", "Dial", "Number", "Record",
    "Redirect", "Hangup",
];

fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

fuzz_target!(|verbs: Vec<Verb>| {
    let mut r = VoiceResponse::new();
    let mut texts = Vec::new();
    for verb in &verbs {
        r = match verb {
            Verb::Say {
                text,
                language,
                voice,
                telephone,
            } => {
                texts.push(text.clone());
                let mut say = Say::new(text.as_str())
                    .language(language.as_str())
                    .voice(voice.as_str());
                if let Some((digits, more)) = telephone {
                    texts.push(digits.clone());
                    texts.push(more.clone());
                    say = say.telephone(digits.as_str()).text(more.as_str());
                }
                r.say(say)
            }
            Verb::Play(url) => {
                texts.push(url.clone());
                r.play(Play::new(url.as_str()))
            }
            Verb::Pause(n) => r.pause(Pause::seconds(*n)),
            Verb::Gather { action, prompt } => {
                texts.push(prompt.clone());
                r.gather(
                    Gather::new()
                        .action(action.as_str())
                        .say(Say::new(prompt.as_str())),
                )
            }
            Verb::Dial {
                number,
                caller_id,
                url,
            } => {
                texts.push(number.clone());
                let mut noun = Number::new(number.as_str());
                if let Some(url) = url {
                    noun = noun.url(url.as_str()).method(Method::Post);
                }
                r.dial(
                    Dial::number(noun)
                        .caller_id(caller_id.as_str())
                        .answer_on_bridge(true),
                )
            }
            Verb::Record(action) => r.record(Record::new().action(action.as_str())),
            Verb::Redirect(url) => {
                texts.push(url.clone());
                r.redirect(Redirect::new(url.as_str()))
            }
            Verb::Hangup => r.hangup(),
        };
    }
    let xml = r.to_xml();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut depth, mut roots, mut elements) = (0usize, 0usize, 0usize);
    let mut seen_texts: Vec<String> = Vec::new();
    let mut joining = false;
    loop {
        let event = reader.read_event();
        let was_text = matches!(event, Ok(Event::Text(_) | Event::GeneralRef(_)));
        match event {
            Ok(Event::Start(e)) => {
                assert!(
                    NAMES.contains(&e.name().as_ref()),
                    "unexpected element in {xml:?}"
                );
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                elements += 1;
            }
            Ok(Event::Empty(e)) => {
                assert!(
                    NAMES.contains(&e.name().as_ref()),
                    "unexpected element in {xml:?}"
                );
                if depth == 0 {
                    roots += 1;
                }
                elements += 1;
                for attr in e.attributes() {
                    attr.expect("well-formed attribute")
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("attribute unescapes");
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Text(t)) => match seen_texts.last_mut() {
                // Text and references arrive in pieces: join them.
                Some(last) if joining => last.push_str(&t.into_inner()),
                _ => seen_texts.push(t.into_inner().into_owned()),
            },
            Ok(Event::GeneralRef(r)) => {
                let c = match r.resolve_char_ref().expect("valid character reference") {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r.into_inner())
                        .expect("a predefined entity")
                        .to_owned(),
                };
                match seen_texts.last_mut() {
                    Some(last) if joining => last.push_str(&c),
                    _ => seen_texts.push(c),
                }
            }
            Ok(Event::Decl(_)) => {}
            Ok(Event::Eof) => break,
            Ok(other) => panic!("unexpected {other:?} in {xml:?}"),
            Err(e) => panic!("not XML ({e}): {xml:?}"),
        }
        joining = was_text;
    }
    assert_eq!((roots, depth), (1, 0), "one <Response> root: {xml:?}");
    // One element per verb, plus the root, a Gather's Say, a Say's say-as and a screened
    // Dial's Number.
    let nested = |v: &Verb| match v {
        Verb::Gather { .. } => 1,
        Verb::Say {
            telephone: Some(_), ..
        } => 1,
        Verb::Dial { url: Some(_), .. } => 1,
        _ => 0,
    };
    let expected = 1 + verbs.len() + verbs.iter().map(nested).sum::<usize>();
    assert_eq!(elements, expected, "no injected element: {xml:?}");
    let all_text: String = seen_texts.concat();
    let want: String = texts
        .iter()
        .flat_map(|t| t.chars().filter(|&c| xml_allowed(c)))
        .collect();
    assert_eq!(all_text, want, "text survives escaping: {xml:?}");
});
