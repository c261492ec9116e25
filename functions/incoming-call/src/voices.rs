//! Voice names checked at start-up against Twilio's published text-to-speech voices, so a typo
//! stops the start with its name instead of failing a live call (Twilio warning 13511). A voice
//! Twilio adds later can be allowed with the flow's `extra_voices`.

/// Amazon Polly voices (standard and neural) shipped for Japanese and English.
const POLLY: &[&str] = &[
    // ja-JP
    "Mizuki",
    "Takumi",
    "Kazuha-Neural",
    "Tomoko-Neural",
    "Takumi-Neural",
    // en-US
    "Joanna",
    "Joanna-Neural",
    "Matthew",
    "Matthew-Neural",
    "Salli",
    "Salli-Neural",
    "Kendra",
    "Kendra-Neural",
    "Kimberly",
    "Kimberly-Neural",
    "Ivy",
    "Ivy-Neural",
    "Joey",
    "Joey-Neural",
    "Justin",
    "Justin-Neural",
    "Kevin-Neural",
    "Ruth-Neural",
    "Stephen-Neural",
    "Danielle-Neural",
    "Gregory-Neural",
    // en-GB
    "Amy",
    "Amy-Neural",
    "Brian",
    "Brian-Neural",
    "Emma",
    "Emma-Neural",
    "Arthur-Neural",
];

/// Google voices: `Google.<language>-<family>-<letter>`, the letters each family has.
const GOOGLE_LETTERED: &[(&str, &str, &str)] = &[
    ("ja-JP", "Standard", "ABCD"),
    ("ja-JP", "Wavenet", "ABCD"),
    ("ja-JP", "Neural2", "BCD"),
    ("en-US", "Standard", "ABCDEFGHIJ"),
    ("en-US", "Wavenet", "ABCDEFGHIJ"),
    ("en-US", "Neural2", "ACDEFGHIJ"),
    ("en-GB", "Standard", "ABCDF"),
    ("en-GB", "Wavenet", "ABCDF"),
    ("en-GB", "Neural2", "ABCDF"),
];
/// Languages with Chirp 3 HD voices.
const GOOGLE_LANGUAGES: &[&str] = &["ja-JP", "en-US", "en-GB"];
/// Chirp 3 HD voices are named, not lettered.
const CHIRP3_HD: &[&str] = &[
    "Achernar",
    "Achird",
    "Algenib",
    "Algieba",
    "Alnilam",
    "Aoede",
    "Autonoe",
    "Callirrhoe",
    "Charon",
    "Despina",
    "Enceladus",
    "Erinome",
    "Fenrir",
    "Gacrux",
    "Iapetus",
    "Kore",
    "Laomedeia",
    "Leda",
    "Orus",
    "Puck",
    "Pulcherrima",
    "Rasalgethi",
    "Sadachbia",
    "Sadaltager",
    "Schedar",
    "Sulafat",
    "Umbriel",
    "Vindemiatrix",
    "Zephyr",
    "Zubenelgenubi",
];

/// Twilio's basic voices.
const BASIC: &[&str] = &["man", "woman", "alice"];

/// True when Twilio publishes `voice`, or the flow lists it in `extra_voices`.
pub fn is_known(voice: &str, extra: &[String]) -> bool {
    if BASIC.contains(&voice) || extra.iter().any(|v| v == voice) {
        return true;
    }
    if let Some(name) = voice.strip_prefix("Polly.") {
        return POLLY.contains(&name);
    }
    let Some(rest) = voice.strip_prefix("Google.") else {
        return false;
    };
    let chirp = GOOGLE_LANGUAGES.iter().any(|lang| {
        rest.strip_prefix(lang)
            .and_then(|r| r.strip_prefix("-Chirp3-HD-"))
            .is_some_and(|name| CHIRP3_HD.contains(&name))
    });
    chirp
        || GOOGLE_LETTERED.iter().any(|(lang, family, letters)| {
            rest.strip_prefix(lang)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|r| r.strip_prefix(family))
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|l| l.len() == 1 && letters.contains(l))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_voices_are_known_and_typos_are_not() {
        for voice in [
            "Polly.Mizuki",
            "Polly.Takumi",
            "Polly.Kazuha-Neural",
            "Polly.Tomoko-Neural",
            "Polly.Takumi-Neural",
            "Google.ja-JP-Standard-A",
            "Google.ja-JP-Wavenet-D",
            "Google.ja-JP-Chirp3-HD-Aoede",
            "Polly.Joanna",
            "alice",
        ] {
            assert!(is_known(voice, &[]), "{voice}");
        }
        for typo in [
            "Polly.Mizki",
            "polly.Mizuki",
            "Polly.Kazuha",
            "Google.ja-JP-Standard-Z",
            "Google.ja-JP-Standard-E",
            "Google.ja-JP-Standard-",
            "Google.ja-JP-Chirp3-HD-Nobody",
            "Google.ja-JP",
            "Mizuki",
        ] {
            assert!(!is_known(typo, &[]), "{typo}");
        }
        assert!(is_known("Polly.Mizki", &["Polly.Mizki".to_owned()]));
    }
}
