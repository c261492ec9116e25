//! The outbound event parser: any bytes either become a request that respects every rule
//! (allow-list, E.164, one kind of instructions, Twilio's limits, a TimeLimit) or a refusal;
//! never a panic. The rules are re-checked here, not taken from the validator's verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbound_call::event::CallEvent;
use twilio_voice::calls::{CallPolicy, Instructions};
use twilio_voice::limits::TWIML_MAX_CHARS;
use twilio_voice::phone::{AllowList, PhoneNumber};
use twilio_voice::twiml::inspect::{GatedElements, Policy, UrlPrefixes};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = CallEvent::from_json(data) else {
        return;
    };
    let policy = CallPolicy {
        reach: Policy {
            destinations: AllowList::parse("+81,+1").unwrap(),
            urls: UrlPrefixes::parse("https://demo.twilio.com/").unwrap(),
            gated: GatedElements::default(),
        },
        default_time_limit: 3600,
    };
    let from = PhoneNumber::parse("+15005550006").unwrap();
    let Ok(request) = event.into_request(Some(&from), &policy) else {
        return;
    };
    let to = request.to().as_str();
    assert!(
        to.starts_with("+81") || to.starts_with("+1"),
        "outside the allow-list"
    );
    assert!(PhoneNumber::parse(to).is_ok() && PhoneNumber::parse(request.from().as_str()).is_ok());
    match request.instructions() {
        Instructions::Twiml(t) => assert!(t.chars().count() <= TWIML_MAX_CHARS),
        Instructions::Url(u) => assert!(u.starts_with("https://demo.twilio.com/"), "{u:?}"),
    }
    let time_limit = request.options().time_limit;
    assert!(
        time_limit.is_some_and(|t| (1..=14_400).contains(&t)),
        "{time_limit:?}"
    );
    let form = request.form();
    assert_eq!(
        form.iter()
            .filter(|(k, _)| *k == "Url" || *k == "Twiml")
            .count(),
        1
    );
});
