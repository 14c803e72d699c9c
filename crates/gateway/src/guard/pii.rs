//! PII and secret detectors, named as Presidio names its entities.

use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;

use super::Finding;

pub const EMAIL_ADDRESS: &str = "EMAIL_ADDRESS";
pub const PHONE_NUMBER: &str = "PHONE_NUMBER";
pub const CREDIT_CARD: &str = "CREDIT_CARD";
pub const IBAN_CODE: &str = "IBAN_CODE";
pub const US_SSN: &str = "US_SSN";
pub const IP_ADDRESS: &str = "IP_ADDRESS";
pub const SECRET: &str = "SECRET";

/// Every PII entity this module knows, in a stable order.
pub const ALL: [&str; 7] = [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS, SECRET];

const SECRET_PATTERNS: &str = concat!(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
    r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}",
    r"|\bxox[baprs]-[A-Za-z0-9-]{10,}",
    r"|\bAIza[0-9A-Za-z_-]{35}",
    r"|\b[sr]k_live_[0-9A-Za-z]{24,}",
);

/// Compiled PII regexes; build once, share everywhere.
pub struct PiiDetectors {
    email: Regex,
    phone: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    ipv4: Regex,
    ipv6: Regex,
    secret: Regex,
}

fn compile(pattern: &str) -> Regex {
    // The patterns are constants covered by tests, so this cannot fail at run time.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

impl Default for PiiDetectors {
    fn default() -> Self {
        Self {
            email: compile(
                r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b",
            ),
            phone: compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}\b|\+\d{8,15}\b"),
            card: compile(r"\b\d(?:[ -]?\d){12,18}\b"),
            iban: compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
            ssn: compile(r"\b\d{3}-\d{2}-\d{4}\b"),
            ipv4: compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"),
            ipv6: compile(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:%\w+)?"),
            secret: compile(SECRET_PATTERNS),
        }
    }
}

impl PiiDetectors {
    /// Appends the findings of `entity` in `text`; unknown names find nothing.
    pub fn detect(&self, entity: &'static str, text: &str, out: &mut Vec<Finding>) {
        match entity {
            EMAIL_ADDRESS => push_matches(&self.email, entity, text, out, |_| true),
            PHONE_NUMBER => push_matches(&self.phone, entity, text, out, is_phone),
            CREDIT_CARD => push_matches(&self.card, entity, text, out, is_card),
            IBAN_CODE => push_matches(&self.iban, entity, text, out, is_iban),
            US_SSN => push_matches(&self.ssn, entity, text, out, is_ssn),
            IP_ADDRESS => self.detect_ip(text, out),
            SECRET => push_matches(&self.secret, entity, text, out, |_| true),
            _ => {}
        }
    }

    fn detect_ip(&self, text: &str, out: &mut Vec<Finding>) {
        push_matches(&self.ipv4, IP_ADDRESS, text, out, |s| s.parse::<Ipv4Addr>().is_ok());
        if !text.contains(':') {
            return;
        }
        let bytes = text.as_bytes();
        let word = |i: usize| bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':');
        for m in self.ipv6.find_iter(text) {
            let bounded = (m.start() == 0 || !word(m.start() - 1)) && !word(m.end());
            if bounded && is_ipv6(m.as_str()) {
                out.push(Finding { check: IP_ADDRESS, start: m.start(), end: m.end() });
            }
        }
    }
}

fn push_matches(re: &Regex, entity: &'static str, text: &str, out: &mut Vec<Finding>, valid: impl Fn(&str) -> bool) {
    for m in re.find_iter(text) {
        if valid(m.as_str()) {
            out.push(Finding { check: entity, start: m.start(), end: m.end() });
        }
    }
}

fn digits(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.chars().filter_map(|c| c.to_digit(10))
}

/// The Luhn checksum over the digits of `text`.
pub fn luhn_valid(text: &str) -> bool {
    let all: Vec<u32> = digits(text).collect();
    if all.len() < 2 {
        return false;
    }
    let sum: u32 = all
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_card(text: &str) -> bool {
    let count = digits(text).count();
    (13..=19).contains(&count) && luhn_valid(text)
}

/// ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1.
pub fn iban_valid(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) || !compact[..2].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let mut remainder: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

fn is_iban(text: &str) -> bool {
    iban_valid(text)
}

fn is_ssn(text: &str) -> bool {
    let area = &text[..3];
    let group = &text[4..6];
    let serial = &text[7..];
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn is_phone(text: &str) -> bool {
    let count = digits(text).count();
    let international = text.starts_with('+');
    let separated = text.contains([' ', '-', '.', '(']);
    (7..=15).contains(&count) && (international || (separated && count >= 10)) && !looks_like_date(text)
}

fn looks_like_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split(['-', '.', '/']).collect();
    parts.len() == 3 && parts.iter().any(|p| p.len() == 4) && parts.iter().all(|p| p.len() <= 4)
}

fn is_ipv6(text: &str) -> bool {
    let address = text.split('%').next().unwrap_or(text);
    address.bytes().any(|b| b.is_ascii_hexdigit()) && address.parse::<Ipv6Addr>().is_ok()
}
