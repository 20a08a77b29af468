//! The sign-in page: self-contained HTML and CSS, no script and no external
//! asset, so it works under the edge's strict CSP.

use crate::reply::html::escape;

/// The page, posting back to `/auth/login` with `rd`; `error` shown above
/// the form; `no_users`: the users file is empty, so the page says how to
/// add the first account (a first run, where nobody could sign in otherwise).
pub fn login(rd: Option<&str>, error: Option<&str>, username: &str, no_users: bool) -> String {
    let action = match rd {
        Some(rd) => format!(
            "/auth/login?rd={}",
            form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ),
        None => "/auth/login".to_string(),
    };
    let alert = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default();
    // After a failure the inputs point at the message, and the cursor goes
    // where the person will type next (the password, when the name is kept).
    let first_run = if no_users {
        format!(
            "<div class=\"hint\" id=\"no-users\" role=\"status\"><strong>No account exists yet.</strong> On the machine running the edge, add one (it takes effect at once):<code>printf '%s' 'a long password' | {} </code></div>",
            escape(&super::service::FIRST_USER_HINT.replace("NAME", "alice"))
        )
    } else {
        String::new()
    };
    let invalid = if error.is_some() {
        " aria-invalid=\"true\" aria-describedby=\"error\""
    } else {
        ""
    };
    let (focus_user, focus_password) = if username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Esprit-Hub</title>
<style>
*{{box-sizing:border-box}}
body{{margin:0;min-height:100vh;display:grid;place-items:center;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#0f172a;color:#0f172a}}
main{{width:min(22rem,92vw);background:#fff;border-radius:12px;padding:2rem;box-shadow:0 10px 30px rgba(0,0,0,.35)}}
h1{{font-size:1.35rem;margin:0 0 .25rem}}
p.sub{{margin:0 0 1.5rem;color:#475569;font-size:.95rem}}
label{{display:block;font-weight:600;font-size:.9rem;margin:.9rem 0 .3rem}}
input{{width:100%;padding:.6rem .7rem;border:1px solid #cbd5e1;border-radius:8px;font:inherit}}
input:focus{{outline:3px solid #2563eb;outline-offset:1px;border-color:#2563eb}}
button{{margin-top:1.4rem;width:100%;padding:.7rem;border:0;border-radius:8px;background:#2563eb;color:#fff;font:inherit;font-weight:600;cursor:pointer}}
button:hover{{background:#1d4ed8}}
.hint{{background:#eff6ff;color:#1e3a8a;border:1px solid #bfdbfe;border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem;font-size:.9rem}}
.hint code{{display:block;margin-top:.4rem;font-size:.8rem;word-break:break-all}}
.error{{background:#fef2f2;color:#991b1b;border:1px solid #fecaca;border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem}}
</style>
</head>
<body>
<main>
<h1>Sign in to Esprit-Hub</h1>
<p class="sub">Agents, Studio and the hub need an account.</p>
{first_run}{alert}<form method="post" action="{action}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" maxlength="64" required{focus_user}{invalid} value="{user}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" maxlength="1024" required{focus_password}{invalid}>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"#,
        action = escape(&action),
        user = escape(username),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_echoes() {
        let page = login(
            Some("/studio/?a=\"><script>"),
            Some("<b>no</b>"),
            "\"><img src=x>",
            false,
        );
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>no"));
        assert!(!page.contains("<script"), "no script at all");
        assert!(page.contains("action=\"/auth/login?rd=%2Fstudio%2F%3Fa%3D%22%3E%3Cscript%3E\""));
    }

    #[test]
    fn a_failure_is_announced_and_tied_to_the_inputs() {
        let fresh = login(None, None, "", false);
        assert!(!fresh.contains("aria-invalid"));
        assert!(!fresh.contains("no-users"));
        assert!(fresh.contains("name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"64\" required autofocus"));
        let failed = login(None, Some("Wrong user name or password."), "alice", false);
        assert!(failed.contains("id=\"error\" role=\"alert\""));
        assert_eq!(failed.matches("aria-describedby=\"error\"").count(), 2);
        assert!(
            failed.contains("maxlength=\"1024\" required autofocus"),
            "focus on the password"
        );
    }

    #[test]
    fn a_first_run_says_how_to_add_a_user() {
        let page = login(None, None, "", true);
        assert!(page.contains("id=\"no-users\""));
        assert!(page.contains("esprit-edge user add alice --password-stdin"));
        assert!(!page.contains("<script"));
    }
}
