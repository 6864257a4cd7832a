//! The identity graph: `(namespace, identifier) -> subject`, where a subject is a customer (who
//! converts) or a member (a partner).
//!
//! Identifiers are normalized per namespace before they are stored or looked up, so the same
//! person written two ways is one entry: e-mail addresses are trimmed and lower-cased, phone
//! numbers become E.164 (parsed with `phonenumber`, numbers without a country code read in the
//! tenant's region) and also yield their WhatsApp JID. An identifier belongs to at most one
//! customer and at most one member: a partner may also be a customer.

pub mod routes;
mod store;

use std::str::FromStr as _;

use phonenumber::country::Id as Region;
use phonenumber::Mode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::Tx;
use crate::http::error::{Error, FieldError};
use crate::ids;

pub use store::{click_customer, find_subject, Subject};

/// The kinds of identifier the graph knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    Email,
    Phone,
    Whatsapp,
    UserId,
    StripeCustomer,
    CrmContactId,
}

impl Namespace {
    pub const ALL: [Namespace; 6] = [
        Namespace::Email,
        Namespace::Phone,
        Namespace::Whatsapp,
        Namespace::UserId,
        Namespace::StripeCustomer,
        Namespace::CrmContactId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Email => "email",
            Namespace::Phone => "phone",
            Namespace::Whatsapp => "whatsapp",
            Namespace::UserId => "user_id",
            Namespace::StripeCustomer => "stripe_customer",
            Namespace::CrmContactId => "crm_contact_id",
        }
    }

    pub fn parse(name: &str) -> Option<Namespace> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

/// Parses a region code such as `GB` (for the `SWITCHYARD_PHONE_REGION` setting).
pub fn parse_region(code: &str) -> Result<Region, String> {
    Region::from_str(&code.trim().to_ascii_uppercase())
        .map_err(|_| format!("{code:?} is not an ISO 3166 region code such as GB or US"))
}

/// The region phone numbers of `tenant_id` are read in: its own, else the server's.
pub async fn phone_region(tx: &mut Tx, tenant_id: &str, default: Region) -> sqlx::Result<Region> {
    let own = crate::tenants::phone_region(tx, tenant_id).await?;
    Ok(own
        .and_then(|code| parse_region(&code).ok())
        .unwrap_or(default))
}

/// A trimmed, Unicode-NFC, lower-cased e-mail address, or `None` when it does not look like one.
/// Control characters and invisible formatting characters (a NUL, a zero-width space) are
/// refused rather than stripped: otherwise `ada@example.com` and `ada\0@example.com` would be
/// two partners that look alike. NFC makes a composed and a decomposed `é` one address.
pub fn normalize_email(raw: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization as _;

    let email: String = raw.trim().to_lowercase().nfc().collect();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c));
    plausible.then_some(email)
}

/// Characters that render as nothing (Unicode's default-ignorable code points, and fillers that
/// show as blanks): soft hyphen, combining grapheme joiner, Arabic letter mark, Hangul fillers,
/// Mongolian vowel separator, zero-width and direction marks and isolates, word joiners,
/// variation selectors, the byte-order mark, tag characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
}

/// A phone number in E.164 (`+447911123456`), read in `region` when it has no country code;
/// `None` when it is not a valid number.
pub fn normalize_phone(raw: &str, region: Region) -> Option<String> {
    let number = phonenumber::parse(Some(region), raw.trim()).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string())
}

/// The WhatsApp JID of an E.164 number: `447911123456@s.whatsapp.net`.
pub fn whatsapp_jid(e164: &str) -> String {
    format!("{}@s.whatsapp.net", e164.trim_start_matches('+'))
}

/// Normalizes `identifier` as a value of `namespace`; the message says why it cannot be.
pub fn normalize(
    namespace: Namespace,
    identifier: &str,
    region: Region,
) -> Result<String, &'static str> {
    match namespace {
        Namespace::Email => normalize_email(identifier).ok_or("is not an e-mail address"),
        Namespace::Phone => normalize_phone(identifier, region)
            .ok_or("invalid_phone: not a phone number (add the country code, e.g. +1 ...)"),
        Namespace::Whatsapp => {
            let digits = identifier.trim().trim_end_matches("@s.whatsapp.net");
            normalize_phone(&format!("+{}", digits.trim_start_matches('+')), region)
                .map(|e164| whatsapp_jid(&e164))
                .ok_or("is not a WhatsApp JID such as 447911123456@s.whatsapp.net")
        }
        Namespace::UserId | Namespace::StripeCustomer | Namespace::CrmContactId => {
            let trimmed = identifier.trim();
            if trimmed.is_empty() || trimmed.len() > 200 {
                Err("must be 1 to 200 characters")
            } else {
                Ok(trimmed.to_owned())
            }
        }
    }
}

/// Identifiers of one person, as the API accepts them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Identifiers {
    pub email: Option<String>,
    /// Any common form; stored as E.164 together with its WhatsApp JID.
    pub phone: Option<String>,
    /// Your application's user id.
    pub user_id: Option<String>,
    /// A Stripe customer id (`cus_...`).
    pub stripe_customer: Option<String>,
    pub crm_contact_id: Option<String>,
}

impl Identifiers {
    /// The normalized `(namespace, identifier)` pairs, a phone adding its WhatsApp JID; or a
    /// message per invalid field, named `{prefix}.{field}`.
    pub fn normalized(
        &self,
        region: Region,
        prefix: &str,
    ) -> Result<Vec<(Namespace, String)>, Vec<FieldError>> {
        let given = [
            (Namespace::Email, &self.email),
            (Namespace::Phone, &self.phone),
            (Namespace::UserId, &self.user_id),
            (Namespace::StripeCustomer, &self.stripe_customer),
            (Namespace::CrmContactId, &self.crm_contact_id),
        ];
        let mut pairs = Vec::new();
        let mut errors = Vec::new();
        for (namespace, value) in given {
            let Some(value) = value else { continue };
            match normalize(namespace, value, region) {
                Ok(normalized) => {
                    if namespace == Namespace::Phone {
                        pairs.push((Namespace::Whatsapp, whatsapp_jid(&normalized)));
                    }
                    pairs.push((namespace, normalized));
                }
                Err(message) => errors.push(FieldError::new(
                    &format!("{prefix}.{}", namespace.as_str()),
                    message,
                )),
            }
        }
        if errors.is_empty() {
            Ok(pairs)
        } else {
            Err(errors)
        }
    }
}

/// Binds a member's e-mail and, when it has one, its phone and WhatsApp JID (idempotent).
/// Entries the member had in those namespaces for other values are replaced.
pub async fn bind_member(
    tx: &mut Tx,
    tenant_id: &str,
    member_id: &str,
    email: &str,
    phone: Option<&str>,
    now: i64,
) -> sqlx::Result<()> {
    let mut pairs = vec![(Namespace::Email, email.to_owned())];
    if let Some(phone) = phone {
        pairs.push((Namespace::Phone, phone.to_owned()));
        pairs.push((Namespace::Whatsapp, whatsapp_jid(phone)));
    }
    store::replace_member(tx, tenant_id, member_id, &pairs, now).await
}

/// Binds `pairs` (normalized identifiers) to one customer and, with `click_id`, ties that
/// customer to the click: the customer `customer_id` names, else the one the identifiers or the
/// click already belong to, else a new one. Idempotent. Returns the customer and whether this
/// call created it. An identifier or click of another customer is 409 `identity_conflict`; an
/// unknown click or customer is 404.
pub async fn bind(
    tx: &mut Tx,
    tenant_id: &str,
    pairs: &[(Namespace, String)],
    click_id: Option<&str>,
    customer_id: Option<&str>,
    now: i64,
) -> Result<(String, bool), Error> {
    let mut bound = Vec::new();
    for (namespace, identifier) in pairs {
        if let Some(subject) =
            store::find_subject(tx, tenant_id, *namespace, identifier, Some("customer")).await?
        {
            if !bound.contains(&subject.subject_id) {
                bound.push(subject.subject_id);
            }
        }
    }
    let click_owner = match click_id {
        Some(click) => match store::click_customer(tx, tenant_id, click).await? {
            Some(owner) => owner,
            None => {
                return Err(Error::NotFound {
                    code: "click_not_found",
                    detail: format!("no click {click}"),
                })
            }
        },
        None => None,
    };
    let existing = match (customer_id, bound.as_slice()) {
        (Some(given), _) => {
            if !store::customer_exists(tx, tenant_id, given).await? {
                return Err(Error::NotFound {
                    code: "customer_not_found",
                    detail: format!("no customer {given}"),
                });
            }
            if let Some(other) = bound.iter().find(|c| *c != given) {
                return Err(conflict(format!(
                    "an identifier is already bound to customer {other}"
                )));
            }
            Some(given.to_owned())
        }
        (None, []) => click_owner.clone(),
        (None, [one]) => Some(one.clone()),
        (None, many) => {
            return Err(conflict(format!(
                "the identifiers belong to different customers: {}",
                many.join(", ")
            )))
        }
    };
    let (customer_id, created) = match existing {
        Some(id) => (id, false),
        None => {
            let id = ids::new("cus");
            store::insert_customer(tx, tenant_id, &id, now).await?;
            (id, true)
        }
    };
    for (namespace, identifier) in pairs {
        if !store::insert(
            tx,
            tenant_id,
            *namespace,
            identifier,
            "customer",
            &customer_id,
            now,
        )
        .await?
        {
            // Bound already: to this customer (idempotent), or to another by a concurrent call.
            let holder =
                store::find_subject(tx, tenant_id, *namespace, identifier, Some("customer"))
                    .await?;
            if let Some(holder) = holder.filter(|h| h.subject_id != customer_id) {
                return Err(conflict(format!(
                    "{} {identifier:?} is already bound to customer {}",
                    namespace.as_str(),
                    holder.subject_id
                )));
            }
        }
    }
    if let Some(click) = click_id {
        if !store::tie_click(tx, tenant_id, click, &customer_id).await? {
            return Err(conflict(format!(
                "click {click} is already tied to customer {}",
                click_owner.unwrap_or_default()
            )));
        }
    }
    Ok((customer_id, created))
}

fn conflict(detail: String) -> Error {
    Error::Conflict {
        code: "identity_conflict",
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input either reads as a number or does not, never panics; what reads is E.164,
        /// and reading it again gives the same number.
        #[test]
        fn phones_normalize_to_a_fixed_point(raw in "[+0-9 ()\\-.a-z]{0,24}|.{0,24}") {
            if let Some(e164) = normalize_phone(&raw, phonenumber::country::Id::GB) {
                prop_assert!(e164.starts_with('+'), "{}", e164);
                prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{}", e164);
                prop_assert_eq!(
                    normalize_phone(&e164, phonenumber::country::Id::US),
                    Some(e164.clone())
                );
            }
        }
    }

    #[test]
    fn uk_phone_forms_become_one_e164_number() {
        for form in [
            "07911 123456",
            "+44 7911 123456",
            "+44 (0)7911 123456",
            "0044 7911 123456",
            "+447911123456",
        ] {
            assert_eq!(
                normalize_phone(form, Region::GB).as_deref(),
                Some("+447911123456"),
                "{form}"
            );
        }
    }

    #[test]
    fn numbers_with_a_country_code_ignore_the_region() {
        assert_eq!(
            normalize_phone("+1 (415) 555-2671", Region::GB).as_deref(),
            Some("+14155552671")
        );
        assert_eq!(
            normalize_phone("+49 30 901820", Region::GB).as_deref(),
            Some("+4930901820")
        );
        assert_eq!(
            normalize_phone("(415) 555-2671", Region::US).as_deref(),
            Some("+14155552671")
        );
    }

    #[test]
    fn nonsense_is_not_a_phone_number() {
        for bad in ["", "hello", "123", "+44 12", "07911 12345678901234"] {
            assert_eq!(normalize_phone(bad, Region::GB), None, "{bad}");
        }
    }

    #[test]
    fn a_phone_has_a_whatsapp_jid() {
        assert_eq!(whatsapp_jid("+447911123456"), "447911123456@s.whatsapp.net");
        assert_eq!(
            normalize(
                Namespace::Whatsapp,
                "447911123456@s.whatsapp.net",
                Region::US
            ),
            Ok("447911123456@s.whatsapp.net".to_owned())
        );
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada\0@example.com",
            "ada@example.com\u{7}",
            "ada\u{200b}@example.com",
            "ada@exam\u{feff}ple.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        // A decomposed é (e + combining acute) is the same address as the composed one.
        assert_eq!(
            normalize_email("Re\u{301}mi@Example.com"),
            normalize_email("r\u{e9}mi@example.com")
        );
    }

    #[test]
    fn regions_parse_case_insensitively() {
        assert_eq!(parse_region("gb"), Ok(Region::GB));
        assert!(parse_region("XX").is_err());
    }
}
