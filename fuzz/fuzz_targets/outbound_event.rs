//! The outbound event parser: any bytes either become a request that respects every rule
//! (allow-list, E.164, one kind of instructions, Twilio's limits) or a refusal; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbound_call::event::CallEvent;
use twilio_voice::calls::{Instructions, MAX_TWIML_CHARS};
use twilio_voice::phone::{AllowList, PhoneNumber};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = CallEvent::from_json(data) else {
        return;
    };
    let allow = AllowList::parse("+81,+1").unwrap();
    let from = PhoneNumber::parse("+15005550006").unwrap();
    let Ok(request) = event.into_request(Some(&from), &allow) else {
        return;
    };
    let to = request.to.as_str();
    assert!(
        to.starts_with("+81") || to.starts_with("+1"),
        "outside the allow-list"
    );
    assert!(PhoneNumber::parse(to).is_ok() && PhoneNumber::parse(request.from.as_str()).is_ok());
    assert_eq!(request.validate(), Ok(()));
    match &request.instructions {
        Instructions::Twiml(t) => assert!(t.chars().count() <= MAX_TWIML_CHARS),
        Instructions::Url(u) => assert!(u.to_ascii_lowercase().starts_with("https://"), "{u:?}"),
    }
    let form = request.form();
    assert_eq!(
        form.iter()
            .filter(|(k, _)| *k == "Url" || *k == "Twiml")
            .count(),
        1
    );
});
