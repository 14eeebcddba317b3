//! The pages people see: server-rendered, every dynamic value escaped, no scripts, no third-party
//! assets, readable on a phone.

use broker_core::connect::flow::division::{DivisionChosen, DivisionOffer};
use broker_core::connect::flow::{Completed, ConnectError, ConnectFailure};

pub use broker_core::html::escape;

/// The one inline style. The Content-Security-Policy allows exactly this block by its hash, so an
/// injected `<style>` or `style=` attribute would not apply even if escaping were ever missed.
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:1.5rem;line-height:1.5;color:#1b1b1b;background:#f6f7f9}main{max-width:36rem;margin:2rem auto;background:#fff;border-radius:8px;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.4rem;margin-top:0}.ok{color:#1a7f37}.bad{color:#b42318}a.button{display:inline-block;margin-top:1rem;padding:.6rem 1.1rem;background:#0b57d0;color:#fff;text-decoration:none;border-radius:6px}p.small{color:#555;font-size:.9rem}label{display:block;margin:.3rem 0}button{margin-top:1rem;padding:.6rem 1.1rem;background:#0b57d0;color:#fff;border:0;border-radius:6px;font:inherit}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

pub fn success(done: &Completed) -> String {
    let provider = done.provider.display_name();
    let verb = if done.was_reconnect() {
        "reconnected"
    } else {
        "connected"
    };
    let mut body = format!(
        "<h1 class=\"ok\">{} is {}</h1>",
        escape(provider),
        escape(verb)
    );
    if let Some(name) = &done.display_name {
        body.push_str(&format!(
            "<p>Connection: <strong>{}</strong></p>",
            escape(name)
        ));
    }
    body.push_str(&format!(
        "<p>Connected to <strong>{}</strong>.</p>",
        escape(&done.context.describe())
    ));
    if let Some(who) = &done.authorized_by {
        let name = who.display_name.as_deref().unwrap_or(&who.subject);
        body.push_str(&format!("<p>Authorized by {}.</p>", escape(name)));
    }
    if let Some(offer) = &done.division_choice {
        body.push_str(&division_form(offer));
    }
    body.push_str(&format!(
        "<p>What happens next: the integration can use {} now, and the broker keeps the access fresh \
         on its own (next check {}). If {} ever needs you to authorize again, the people named on \
         the connection get an email with a link.</p><p class=\"small\">You can close this window.</p>",
        escape(provider),
        escape(&done.next_refresh_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        escape(provider),
    ));
    layout(&format!("{provider} {verb}"), &body)
}

/// The granted divisions to choose from; the provisional one is preselected.
fn division_form(offer: &DivisionOffer) -> String {
    let mut options = String::new();
    for d in &offer.granted {
        let label = match &d.name {
            Some(name) => format!("{} ({name})", d.code),
            None => d.code.to_string(),
        };
        options.push_str(&format!(
            "<label><input type=\"radio\" name=\"division\" value=\"{}\"{}> {}</label>",
            d.code,
            if d.code == offer.bound {
                " checked"
            } else {
                ""
            },
            escape(&label)
        ));
    }
    format!(
        "<form method=\"post\" action=\"{}\"><p>This authorization gives access to {} divisions. \
         The connection works in division {} now; choose the one it should work in:</p>\
         <input type=\"hidden\" name=\"connection\" value=\"{}\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{}\">{options}\
         <button type=\"submit\">Use this division</button></form>",
        escape(offer.action.as_str()),
        offer.granted.len(),
        offer.bound,
        escape(offer.connection.as_str()),
        escape(offer.ticket.expose()),
    )
}

pub fn division_chosen(chosen: &DivisionChosen) -> String {
    let mut body = "<h1 class=\"ok\">Exact Online division chosen</h1>".to_string();
    if let Some(name) = &chosen.display_name {
        body.push_str(&format!(
            "<p>Connection: <strong>{}</strong></p>",
            escape(name)
        ));
    }
    body.push_str(&format!(
        "<p>The connection works in <strong>{}</strong>.</p><p class=\"small\">You can close this window.</p>",
        escape(&chosen.context.describe())
    ));
    layout("Exact Online division chosen", &body)
}

pub fn failure(failed: &ConnectFailure) -> String {
    // A spent or replaced link is not a failure to connect: the page says how the connection stands.
    let (title, heading, lead) = match (&failed.error, failed.provider) {
        (ConnectError::LinkSpent { .. }, _) => (
            "This link was already used".to_string(),
            "<h1>",
            "What happened",
        ),
        (ConnectError::LinkReplaced { .. }, _) => (
            "This link was replaced".to_string(),
            "<h1>",
            "What happened",
        ),
        (_, Some(p)) => (
            format!("Could not connect {}", p.display_name()),
            "<h1 class=\"bad\">",
            "What went wrong",
        ),
        (_, None) => (
            "Could not connect".to_string(),
            "<h1 class=\"bad\">",
            "What went wrong",
        ),
    };
    let mut body = format!(
        "{heading}{}</h1><p>{lead}: {}.</p><p>{}</p>",
        escape(&title),
        escape(&capitalize(&failed.error.to_string())),
        escape(&failed.error.what_to_do()),
    );
    if let Some(url) = &failed.try_again {
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"{}\">Try again</a></p>",
            escape(url.as_str())
        ));
    }
    layout(&title, &body)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
