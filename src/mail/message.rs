//! Turning a rendered email into a MIME message (multipart/alternative: text, then HTML).

use super::templates::RenderedEmail;
use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};

/// Builds the message for outbox entry `id`. Its `Message-ID` derives from `id`, so a retry of
/// a message whose first delivery was not acknowledged carries the same id and receivers can
/// tell it is the same message.
pub fn build(
    id: &str,
    from: &Mailbox,
    recipient: &str,
    email: RenderedEmail,
) -> anyhow::Result<Message> {
    // A bare address, parsed as the Invitations API checks it at create (`parse_email`): a
    // display name or angle brackets are not an address, and never reach the `To` header.
    let to: Address = recipient
        .parse()
        .context("the recipient is not a valid email address")?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(email.subject)
        .message_id(Some(format!("<{id}@{}>", from.email.domain())))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(email.text, email.html))
        .context("building the MIME message")
}
