//! From a normalised request path to one regular file inside the site's
//! root, or a miss. The edge already refused dot segments, encoded
//! separators and control characters; this adds what only the file system
//! can answer: hidden files stay hidden, and no symlink leads out of the root.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The file a request names.
#[derive(Debug)]
pub struct Resolved {
    /// Its canonical path (inside the root).
    pub path: PathBuf,
    /// Size and modification time, for the validators.
    pub meta: std::fs::Metadata,
    /// The SPA fallback answered instead of the path asked for.
    pub fallback: bool,
    /// The root, canonical: what the file's siblings must stay inside too.
    pub root: PathBuf,
}

/// Why nothing is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No such file (or hidden, or not a regular file): 404.
    NotFound,
    /// The path resolves outside the root through a symlink: 404 to the
    /// client, a warning in the log.
    Escapes,
    /// The root itself is gone or unreadable: 503, the operator must act.
    Root(String),
    /// A directory asked for without its trailing `/`: 301 to the path with
    /// it (as nginx does), so the index's relative links resolve inside it.
    NeedsSlash,
}

/// Finds the file `rel` (a normalised path starting with `/`, percent
/// escapes left for reserved characters) names under `root`. A directory
/// means its `index`. With `spa`, a miss on an extension-less path (a client
/// route of a single-page app) answers the root's `index` instead, so deep
/// links work while a missing `app-3f9a.js` stays a 404.
pub fn resolve(root: &Path, rel: &str, spa: bool, index: &str) -> Result<Resolved, Miss> {
    let root = root
        .canonicalize()
        .map_err(|e| Miss::Root(format!("{}: {e}", root.display())))?;
    match find(&root, rel, index) {
        Err(Miss::NotFound) if spa && is_client_route(rel) => {
            let mut found = find(&root, "/", index)?;
            found.fallback = true;
            Ok(found)
        }
        other => other,
    }
}

fn find(root: &Path, rel: &str, index: &str) -> Result<Resolved, Miss> {
    let mut path = root.to_path_buf();
    let mut dir_asked = rel.ends_with('/');
    for segment in rel.split('/').filter(|s| !s.is_empty()) {
        let name = decode(segment).ok_or(Miss::NotFound)?;
        // Hidden files (`.git`, `.env`, `.htpasswd`) are never part of a site.
        if name.first() == Some(&b'.') || name.contains(&0) {
            return Err(Miss::NotFound);
        }
        path.push(OsStr::from_bytes(&name));
    }
    if path.is_dir() {
        if !dir_asked && !rel.is_empty() {
            return Err(Miss::NeedsSlash);
        }
        path.push(index);
        dir_asked = false;
    }
    if dir_asked {
        return Err(Miss::NotFound);
    }
    let canonical = path.canonicalize().map_err(|_| Miss::NotFound)?;
    if !canonical.starts_with(root) {
        return Err(Miss::Escapes);
    }
    let meta = std::fs::metadata(&canonical).map_err(|_| Miss::NotFound)?;
    if !meta.is_file() {
        return Err(Miss::NotFound);
    }
    Ok(Resolved {
        path: canonical,
        meta,
        fallback: false,
        root: root.to_path_buf(),
    })
}

/// `/board/42` yes, `/assets/app.js` and `/favicon.ico` no: only a path
/// whose last segment has no extension is a page of the app.
fn is_client_route(rel: &str) -> bool {
    let last = rel.rsplit('/').next().unwrap_or("");
    !last.contains('.')
}

/// Percent-decodes one segment to the bytes of a file name; `None` for a
/// bad escape or a decoded separator (the normaliser refuses both already;
/// this keeps the resolver safe on its own).
fn decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == b'/' || b == b'\\' {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn site() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        fs::create_dir_all(root.join("assets")).unwrap();
        fs::write(root.join("index.html"), "<h1>app</h1>").unwrap();
        fs::write(root.join("assets/app-3f9aB1c2.js"), "js").unwrap();
        fs::write(root.join("a file.txt"), "spaced").unwrap();
        fs::write(root.join(".env"), "SECRET=1").unwrap();
        fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        (dir, root)
    }

    fn name(r: &Result<Resolved, Miss>) -> Option<String> {
        r.as_ref()
            .ok()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
    }

    #[test]
    fn files_directories_and_escapes() {
        let (_d, root) = site();
        assert_eq!(
            name(&resolve(&root, "/", false, "index.html")).as_deref(),
            Some("index.html")
        );
        assert_eq!(
            name(&resolve(
                &root,
                "/assets/app-3f9aB1c2.js",
                false,
                "index.html"
            ))
            .as_deref(),
            Some("app-3f9aB1c2.js")
        );
        assert_eq!(
            name(&resolve(&root, "/a%20file.txt", false, "index.html")).as_deref(),
            Some("a file.txt")
        );
        // A directory without an index is never listed.
        assert!(resolve(&root, "/assets/", false, "index.html").is_err());
        assert_eq!(
            resolve(&root, "/assets", true, "index.html").unwrap_err(),
            Miss::NeedsSlash
        );
        assert_eq!(
            resolve(&root, "/missing.js", false, "index.html").unwrap_err(),
            Miss::NotFound
        );
        assert_eq!(
            resolve(&root, "/index.html/", false, "index.html").unwrap_err(),
            Miss::NotFound
        );
    }

    #[test]
    fn hidden_files_and_bad_escapes_are_not_found() {
        let (_d, root) = site();
        for p in [
            "/.env",
            "/%2eenv",
            "/assets/%2F..%2Foutside.txt",
            "/x%00y",
            "/%zz",
        ] {
            assert_eq!(
                resolve(&root, p, false, "index.html").unwrap_err(),
                Miss::NotFound,
                "{p}"
            );
        }
        assert_eq!(
            resolve(&root, "/.env", true, "index.html").unwrap_err(),
            Miss::NotFound
        );
    }

    #[test]
    fn symlinks_that_leave_the_root_are_refused() {
        let (d, root) = site();
        std::os::unix::fs::symlink(d.path().join("outside.txt"), root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("index.html"), root.join("inside.html")).unwrap();
        assert_eq!(
            resolve(&root, "/leak.txt", true, "index.html").unwrap_err(),
            Miss::Escapes
        );
        assert_eq!(
            resolve(&root, "/up/outside.txt", true, "index.html").unwrap_err(),
            Miss::Escapes
        );
        assert_eq!(
            name(&resolve(&root, "/inside.html", true, "index.html")).as_deref(),
            Some("index.html")
        );
    }

    #[test]
    fn spa_fallback_only_for_client_routes() {
        let (_d, root) = site();
        let deep = resolve(&root, "/board/42", true, "index.html").unwrap();
        assert!(deep.fallback);
        assert_eq!(
            resolve(&root, "/assets/gone-1234abcd.js", true, "index.html").unwrap_err(),
            Miss::NotFound
        );
        assert!(resolve(&root, "/board/42", false, "index.html").is_err());
    }

    #[test]
    fn a_missing_root_is_the_operators_problem() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve(&d.path().join("nope"), "/", true, "index.html"),
            Err(Miss::Root(_))
        ));
    }
}
