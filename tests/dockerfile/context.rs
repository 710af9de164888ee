//! The Docker build context as a Docker engine would send it, and a stage's `COPY`
//! and `RUN` steps replayed in a directory, so that tests/dockerfile.rs can build each
//! stage without an engine.
//!
//! `.dockerignore` follows the engine's rules: patterns are globs in which `*` stops
//! at `/` and `**` crosses it, a pattern that matches a directory excludes what is
//! under it, `!` lets a path back in, and the last pattern that matches decides.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};

/// One `.dockerignore` line.
struct Pattern {
    text: String,
    include: bool,
    glob: GlobMatcher,
}

fn glob(text: &str) -> GlobMatcher {
    GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .unwrap_or_else(|e| panic!(".dockerignore pattern {text:?}: {e}"))
        .compile_matcher()
}

/// The patterns of a `.dockerignore`, in order.
pub struct Ignore(Vec<Pattern>);

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (include, p) = match line.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, line),
                };
                let p = p.trim_start_matches('/').trim_end_matches('/').to_string();
                Pattern {
                    glob: glob(&p),
                    text: p,
                    include,
                }
            })
            .collect();
        Ignore(patterns)
    }

    /// Whether `path` (relative, `/`-separated) stays out of the context: the last
    /// pattern that matches it or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.0 {
            let hit = p.glob.is_match(path)
                || path
                    .match_indices('/')
                    .any(|(i, _)| p.glob.is_match(&path[..i]));
            if hit {
                excluded = !p.include;
            }
        }
        excluded
    }

    /// Whether some `!` pattern may let back in a path below the directory `dir`, so
    /// that an excluded directory must still be walked.
    fn may_include_below(&self, dir: &str) -> bool {
        let depth = dir.split('/').count();
        self.0.iter().filter(|p| p.include).any(|p| {
            let parts: Vec<&str> = p.text.split('/').collect();
            if parts.len() <= depth {
                return parts.contains(&"**");
            }
            parts.iter().zip(dir.split('/')).all(|(pat, name)| {
                *pat == "**"
                    || Glob::new(pat)
                        .map(|g| g.compile_matcher().is_match(name))
                        .unwrap_or(true)
            })
        })
    }
}

/// The files of the build context: every file under the repository that
/// `.dockerignore` does not exclude, as relative `/`-separated paths.
pub struct Context {
    root: PathBuf,
    pub ignore: Ignore,
    pub files: BTreeSet<String>,
}

impl Context {
    pub fn of(root: &Path) -> Context {
        let text = std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_default();
        let ignore = Ignore::parse(&text);
        let mut files = BTreeSet::new();
        walk(root, "", &ignore, &mut files);
        Context {
            root: root.to_path_buf(),
            ignore,
            files,
        }
    }

    /// The context's files at or below `src` (a file or a directory), with their path
    /// relative to `src` ("" for `src` itself when it is a file).
    fn under<'a>(&'a self, src: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.files.iter().filter_map(move |f| {
            if f == src {
                Some((f.as_str(), ""))
            } else {
                f.strip_prefix(src)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| (f.as_str(), rest))
            }
        })
    }

    /// `COPY <srcs> <dest>` from the context into `workdir` (the stage's WORKDIR, or
    /// `root` joined with an absolute `dest`), with the engine's rules: a directory's
    /// contents are copied, several sources or a `dest` ending in `/` name a directory.
    /// Panics, as the engine fails, when a source is not in the context.
    pub fn copy(&self, line: usize, srcs: &[&str], dest: &str, root: &Path, workdir: &Path) {
        let into = match dest.strip_prefix('/') {
            Some(abs) => root.join(abs),
            None => workdir.join(dest),
        };
        let into_dir = dest.ends_with('/') || srcs.len() > 1;
        for src in srcs {
            let src = src.trim_start_matches("./").trim_end_matches('/');
            assert!(
                !src.contains(['*', '?', '[']),
                "Dockerfile line {line}: this test does not expand wildcards in COPY {src}"
            );
            let found: Vec<(&str, &str)> = self.under(src).collect();
            assert!(
                !found.is_empty(),
                "Dockerfile line {line}: COPY {src}: not in the build context \
                 (missing, or excluded by .dockerignore)"
            );
            for (file, rest) in found {
                let target = match (rest, into_dir) {
                    ("", true) => into.join(Path::new(file).file_name().expect("name")),
                    ("", false) => into.clone(),
                    (rest, _) => into.join(rest),
                };
                std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                std::fs::copy(self.root.join(file), &target)
                    .unwrap_or_else(|e| panic!("copy {file} to {}: {e}", target.display()));
            }
        }
    }
}

fn walk(root: &Path, rel: &str, ignore: &Ignore, files: &mut BTreeSet<String>) {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            if !ignore.excludes(&path) || ignore.may_include_below(&path) {
                walk(root, &path, ignore, files);
            }
        } else if !ignore.excludes(&path) {
            files.insert(path);
        }
    }
}

#[test]
fn dockerignore_rules_follow_the_engine() {
    let ig = Ignore::parse("*\n!src/\n!Cargo.toml\n**/*.swp\nconf/**/*.local.yaml\n!conf\n");
    assert!(ig.excludes("target/debug/holdfast"));
    assert!(ig.excludes("benches/route.rs"));
    assert!(!ig.excludes("src/main.rs"));
    assert!(!ig.excludes("Cargo.toml"));
    assert!(ig.excludes("src/.main.rs.swp"), "** crosses directories");
    // `!conf` comes last and lets the whole directory back in.
    assert!(!ig.excludes("conf/a/b.local.yaml"));
    assert!(!ig.may_include_below("target"));
    // An excluded directory is still walked when a `!` pattern reaches below it.
    let deep = Ignore::parse("*\n!a/*/c.txt\n");
    assert!(deep.excludes("a/b") && deep.may_include_below("a/b"));
    assert!(!deep.excludes("a/b/c.txt") && deep.excludes("a/b/d.txt"));
    assert!(!deep.may_include_below("z"));
}
