//! The simulated host's file system: a tree fixed when the host is made, seen through one
//! session's overlay of what that session wrote or removed, with the web server user's
//! permissions. Nothing here touches the real file system.

use std::{collections::BTreeMap, fmt, sync::Arc};

/// Text computed at each read, from the time of the event (e.g. `/proc/uptime`).
pub type Generator = Arc<dyn Fn(f64) -> String + Send + Sync>;

#[derive(Clone)]
pub enum Content {
    Dir,
    Text(Arc<str>),
    /// A program: its size, and the first bytes of an ELF file when read.
    Binary(u64),
    Symlink(Arc<str>),
    Generated(Generator),
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Dir => write!(f, "Dir"),
            Content::Text(text) => write!(f, "Text({} bytes)", text.len()),
            Content::Binary(size) => write!(f, "Binary({size})"),
            Content::Symlink(target) => write!(f, "Symlink({target})"),
            Content::Generated(_) => write!(f, "Generated"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub content: Content,
    /// Permission bits, e.g. `0o644` (`0o1777` for /tmp).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Epoch seconds.
    pub mtime: i64,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir)
    }

    /// The size `ls` shows; generated files show 0 as in /proc.
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::Dir => 4096,
            Content::Text(text) => text.len() as u64,
            Content::Binary(size) => *size,
            Content::Symlink(target) => target.len() as u64,
            Content::Generated(_) => 0,
        }
    }
}

/// Why a file operation failed, as `strerror` words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("No such file or directory")]
    NotFound,
    #[error("Permission denied")]
    PermissionDenied,
    #[error("Is a directory")]
    IsDirectory,
    #[error("Not a directory")]
    NotDirectory,
    #[error("No space left on device")]
    NoSpace,
    #[error("Too many levels of symbolic links")]
    Loop,
    #[error("File exists")]
    AlreadyExists,
    #[error("Operation not permitted")]
    NotPermitted,
}

/// Who the web server runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Read, write or search (execute) permission.
#[derive(Clone, Copy)]
enum Access {
    Read = 4,
    Write = 2,
    Search = 1,
}

impl Identity {
    fn may(&self, node: &Node, access: Access) -> bool {
        let shift = if node.uid == self.uid {
            6
        } else if node.gid == self.gid {
            3
        } else {
            0
        };
        (node.mode >> shift) & access as u32 != 0
    }
}

/// The tree a host is made with.
#[derive(Debug, Default)]
pub struct FileSystem {
    nodes: BTreeMap<String, Node>,
}

impl FileSystem {
    /// Adds `node` at `path` (absolute), and root-owned directories for its missing parents.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = normalise("/", path);
        let mut parent = parent_of(&path);
        while !self.nodes.contains_key(parent) {
            let dir = Node {
                content: Content::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: node.mtime,
            };
            self.nodes.insert(parent.to_owned(), dir);
            if parent == "/" {
                break;
            }
            parent = parent_of(parent);
        }
        self.nodes.insert(path, node);
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .filter_map(move |(path, node)| {
                let name = &path[if dir == "/" { 1 } else { dir.len() + 1 }..];
                (!name.is_empty() && !name.contains('/')).then_some((name, node))
            })
    }
}

/// What one session changed: files and directories it made or replaced, and what it removed
/// (`None`).
#[derive(Debug, Default)]
pub struct Overlay {
    entries: BTreeMap<String, Option<Node>>,
    bytes: usize,
}

/// Bookkeeping counted per overlay entry beyond its path and text.
const ENTRY_OVERHEAD: usize = 96;

impl Overlay {
    /// Approximate memory held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn set(&mut self, path: String, node: Option<Node>) {
        let cost = |path: &str, node: &Option<Node>| {
            ENTRY_OVERHEAD
                + path.len()
                + match node {
                    Some(Node {
                        content: Content::Text(text),
                        ..
                    }) => text.len(),
                    _ => 0,
                }
        };
        self.bytes += cost(&path, &node);
        if let Some(old) = self.entries.get(&path) {
            self.bytes -= cost(&path, old);
        }
        self.entries.insert(path, node);
    }
}

/// `path` made absolute against `cwd`, with `.`, `..` (stopping at the root) and repeated
/// slashes resolved, as the kernel resolves them (symbolic links aside).
pub fn normalise(cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let start = if path.starts_with('/') { "" } else { cwd };
    for part in start.split('/').chain(path.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

/// The file name of `path`.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Symbolic links followed in one look-up at most (Linux: 40).
const MAX_LINKS: usize = 8;

/// A session's view of its host's files.
pub struct Files<'a> {
    base: &'a FileSystem,
    overlay: &'a mut Overlay,
    user: &'a Identity,
    /// Epoch seconds of the event, for what it writes and for generated files.
    now: f64,
    /// The most the overlay may hold.
    max_bytes: usize,
}

impl<'a> Files<'a> {
    pub fn new(
        base: &'a FileSystem,
        overlay: &'a mut Overlay,
        user: &'a Identity,
        now: f64,
        max_bytes: usize,
    ) -> Self {
        Self {
            base,
            overlay,
            user,
            now,
            max_bytes,
        }
    }

    /// What the session's overlay holds.
    pub fn overlay_bytes(&self) -> usize {
        self.overlay.bytes()
    }

    /// Whether the session wrote or removed `path` (its own files, not the host's).
    pub fn is_overlaid(&self, path: &str) -> bool {
        self.overlay.entries.contains_key(path)
    }

    fn node(&self, path: &str) -> Option<&Node> {
        match self.overlay.entries.get(path) {
            Some(entry) => entry.as_ref(),
            None => self.base.get(path),
        }
    }

    /// The real path of `path` (absolute and normalised) with its node, every symbolic link
    /// followed, if every directory on the way may be searched. With `follow_last` false, a
    /// link at the end is its own answer (as `lstat`).
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<(String, Node), FsError> {
        let mut pending = path.to_owned();
        for _ in 0..=MAX_LINKS {
            match self.walk(&pending, follow_last)? {
                Walk::Found(real, node) => return Ok((real, node)),
                Walk::Link(next) => pending = next,
            }
        }
        Err(FsError::Loop)
    }

    fn walk(&self, path: &str, follow_last: bool) -> Result<Walk, FsError> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut current = String::from("/");
        let mut node = self.node("/").cloned().ok_or(FsError::NotFound)?;
        for (i, part) in parts.iter().enumerate() {
            if !node.is_dir() {
                return Err(FsError::NotDirectory);
            }
            if !self.user.may(&node, Access::Search) {
                return Err(FsError::PermissionDenied);
            }
            let next = if current == "/" {
                format!("/{part}")
            } else {
                format!("{current}/{part}")
            };
            node = self.node(&next).cloned().ok_or(FsError::NotFound)?;
            let last = i + 1 == parts.len();
            if let Content::Symlink(target) = &node.content
                && (!last || follow_last)
            {
                let rest = parts[i + 1..].join("/");
                let base = normalise(&current, target);
                return Ok(Walk::Link(normalise(&base, &rest)));
            }
            current = next;
        }
        Ok(Walk::Found(current, node))
    }

    /// Whether the web server user may enter the directory at `path` (`cd`).
    pub fn may_enter(&self, path: &str) -> bool {
        self.stat(path)
            .is_ok_and(|(_, node)| node.is_dir() && self.user.may(&node, Access::Search))
    }

    /// The node at `path`, links followed.
    pub fn stat(&self, path: &str) -> Result<(String, Node), FsError> {
        self.resolve(path, true)
    }

    /// The text of the file at `path`.
    pub fn read(&self, path: &str) -> Result<String, FsError> {
        let (_, node) = self.stat(path)?;
        if !self.user.may(&node, Access::Read) {
            return Err(FsError::PermissionDenied);
        }
        Ok(match &node.content {
            Content::Dir => return Err(FsError::IsDirectory),
            Content::Text(text) => text.to_string(),
            Content::Binary(_) => "\u{7f}ELF\u{2}\u{1}\u{1}".to_owned(),
            Content::Generated(generate) => generate(self.now),
            Content::Symlink(_) => unreachable!("links are followed"),
        })
    }

    /// The entries of the directory at `path`, by name.
    pub fn list(&self, path: &str) -> Result<Vec<(String, Node)>, FsError> {
        let (dir, node) = self.stat(path)?;
        if !node.is_dir() {
            return Err(FsError::NotDirectory);
        }
        if !self.user.may(&node, Access::Read) {
            return Err(FsError::PermissionDenied);
        }
        let mut entries: BTreeMap<String, Node> = self
            .base
            .children(&dir)
            .map(|(name, node)| (name.to_owned(), node.clone()))
            .collect();
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        for (path, entry) in self.overlay.entries.range(prefix.clone()..) {
            let Some(name) = path.strip_prefix(&prefix) else {
                break;
            };
            if name.contains('/') {
                continue;
            }
            match entry {
                Some(node) => entries.insert(name.to_owned(), node.clone()),
                None => entries.remove(name),
            };
        }
        Ok(entries.into_iter().collect())
    }

    /// Writes `text` to the file at `path`, replacing or appending to what it holds.
    pub fn write(&mut self, path: &str, text: &str, append: bool) -> Result<(), FsError> {
        let (real, existing) = match self.stat(path) {
            Ok((real, node)) => (real, Some(node)),
            Err(FsError::NotFound) => (self.creatable(path)?, None),
            Err(err) => return Err(err),
        };
        let node = match existing {
            Some(node) if node.is_dir() => return Err(FsError::IsDirectory),
            Some(node) if !self.user.may(&node, Access::Write) => {
                return Err(FsError::PermissionDenied);
            }
            Some(node) => {
                let mut content = if append {
                    self.read(&real).unwrap_or_default()
                } else {
                    String::new()
                };
                content.push_str(text);
                Node {
                    content: Content::Text(content.into()),
                    mtime: self.now as i64,
                    ..node
                }
            }
            None => self.new_node(Content::Text(text.into()), 0o644),
        };
        self.put(real, node)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), FsError> {
        match self.stat(path) {
            Ok(_) => Err(FsError::AlreadyExists),
            Err(FsError::NotFound) => {
                let real = self.creatable(path)?;
                let node = self.new_node(Content::Dir, 0o755);
                self.put(real, node)
            }
            Err(err) => Err(err),
        }
    }

    /// Removes the file (or, with `directories`, the directory and everything in it) at
    /// `path`.
    pub fn remove(&mut self, path: &str, directories: bool) -> Result<(), FsError> {
        let (real, node) = self.resolve(&normalise("/", path), false)?;
        if node.is_dir() && !directories {
            return Err(FsError::IsDirectory);
        }
        let (_, parent) = self.stat(parent_of(&real))?;
        if real == "/" || !self.user.may(&parent, Access::Write) {
            return Err(FsError::PermissionDenied);
        }
        self.overlay.set(real, None);
        Ok(())
    }

    /// Sets the permission bits of what the web server user owns.
    pub fn chmod(&mut self, path: &str, mode: u32) -> Result<(), FsError> {
        let (real, node) = self.stat(path)?;
        if node.uid != self.user.uid {
            return Err(FsError::NotPermitted);
        }
        self.put(real, Node { mode, ..node })
    }

    /// Creates an empty file at `path`, or dates the existing one now.
    pub fn touch(&mut self, path: &str) -> Result<(), FsError> {
        match self.stat(path) {
            Ok((real, node)) if self.user.may(&node, Access::Write) => self.put(
                real,
                Node {
                    mtime: self.now as i64,
                    ..node
                },
            ),
            Ok(_) => Err(FsError::PermissionDenied),
            Err(FsError::NotFound) => self.write(path, "", true),
            Err(err) => Err(err),
        }
    }

    fn new_node(&self, content: Content, mode: u32) -> Node {
        Node {
            content,
            mode,
            uid: self.user.uid,
            gid: self.user.gid,
            mtime: self.now as i64,
        }
    }

    /// The real path a new entry at `path` would have: its parent must be a directory the
    /// user may write to.
    fn creatable(&self, path: &str) -> Result<String, FsError> {
        let path = normalise("/", path);
        let (parent, node) = self.stat(parent_of(&path))?;
        if !node.is_dir() {
            return Err(FsError::NotDirectory);
        }
        if !self.user.may(&node, Access::Write) || !self.user.may(&node, Access::Search) {
            return Err(FsError::PermissionDenied);
        }
        Ok(normalise(&parent, base_name(&path)))
    }

    fn put(&mut self, path: String, node: Node) -> Result<(), FsError> {
        let grows = match &node.content {
            Content::Text(text) => text.len(),
            _ => 0,
        } + ENTRY_OVERHEAD
            + path.len();
        if self.overlay.bytes + grows > self.max_bytes {
            return Err(FsError::NoSpace);
        }
        self.overlay.set(path, Some(node));
        Ok(())
    }
}

enum Walk {
    Found(String, Node),
    Link(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const WWW: Identity = Identity { uid: 33, gid: 33 };

    fn text(text: &str, mode: u32, uid: u32) -> Node {
        Node {
            content: Content::Text(text.into()),
            mode,
            uid,
            gid: uid,
            mtime: 0,
        }
    }

    fn dir(mode: u32, uid: u32) -> Node {
        Node {
            content: Content::Dir,
            mode,
            uid,
            gid: uid,
            mtime: 0,
        }
    }

    fn base() -> FileSystem {
        let mut fs = FileSystem::default();
        fs.insert(
            "/etc/passwd",
            text("root:x:0:0:root:/root:/bin/bash\n", 0o644, 0),
        );
        fs.insert("/etc/shadow", text("root:*:19000:0:99999:7:::\n", 0o640, 0));
        fs.insert("/root", dir(0o700, 0));
        fs.insert("/root/.bash_history", text("ls\n", 0o600, 0));
        fs.insert("/tmp", dir(0o1777, 0));
        fs.insert("/var/www/html", dir(0o755, 33));
        fs.insert("/var/www/html/index.php", text("<?php\n", 0o644, 33));
        fs.insert(
            "/bin",
            Node {
                content: Content::Symlink("usr/bin".into()),
                ..dir(0o777, 0)
            },
        );
        fs.insert(
            "/usr/bin/id",
            Node {
                content: Content::Binary(48064),
                ..dir(0o755, 0)
            },
        );
        fs
    }

    #[test]
    fn paths_are_normalised_as_the_kernel_does() {
        assert_eq!(
            normalise("/var/www/html", "../../../../etc/passwd"),
            "/etc/passwd"
        );
        assert_eq!(normalise("/var/www/html", "//etc//./hosts"), "/etc/hosts");
        assert_eq!(normalise("/var/www/html", "x/../y"), "/var/www/html/y");
        assert_eq!(normalise("/", ".."), "/");
        assert_eq!(base_name("/etc/passwd"), "passwd");
    }

    #[test]
    fn reads_follow_links_and_permissions() {
        let base = base();
        let mut overlay = Overlay::default();
        let files = Files::new(&base, &mut overlay, &WWW, 0.0, 1 << 20);
        assert_eq!(
            files.read("/etc/passwd").unwrap(),
            "root:x:0:0:root:/root:/bin/bash\n"
        );
        assert_eq!(files.read("/etc/shadow"), Err(FsError::PermissionDenied));
        assert_eq!(
            files.read("/root/.bash_history"),
            Err(FsError::PermissionDenied)
        );
        assert_eq!(files.read("/etc/nope"), Err(FsError::NotFound));
        assert_eq!(files.read("/etc"), Err(FsError::IsDirectory));
        assert_eq!(files.read("/etc/passwd/x"), Err(FsError::NotDirectory));
        let (real, node) = files.stat("/bin/id").unwrap();
        assert_eq!((real.as_str(), node.size()), ("/usr/bin/id", 48064));
        let names: Vec<String> = files.list("/").unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["bin", "etc", "root", "tmp", "usr", "var"]);
    }

    #[test]
    fn a_session_writes_where_the_web_user_may_and_within_its_room() {
        let base = base();
        let mut overlay = Overlay::default();
        let mut files = Files::new(&base, &mut overlay, &WWW, 1000.0, 1000);
        files.write("/tmp/a", "one\n", false).unwrap();
        files.write("/tmp/a", "two\n", true).unwrap();
        assert_eq!(files.read("/tmp/a").unwrap(), "one\ntwo\n");
        assert_eq!(
            files.write("/etc/x", "y", false),
            Err(FsError::PermissionDenied)
        );
        assert_eq!(
            files.write("/etc/passwd", "y", false),
            Err(FsError::PermissionDenied)
        );
        files
            .write("/var/www/html/shell.php", "<?php", false)
            .unwrap();
        files.remove("/var/www/html/index.php", false).unwrap();
        let names: Vec<String> = files
            .list("/var/www/html")
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["shell.php"]);
        assert_eq!(
            files.write("/tmp/big", &"x".repeat(1000), false),
            Err(FsError::NoSpace)
        );
        files.mkdir("/tmp/d").unwrap();
        files.write("/tmp/d/f", "z", false).unwrap();
        assert_eq!(files.read("/tmp/d/f").unwrap(), "z");
        assert_eq!(files.mkdir("/tmp/d"), Err(FsError::AlreadyExists));
        assert!(overlay.bytes() > 0);
        // The base is untouched: another session sees none of it.
        let mut other = Overlay::default();
        let files = Files::new(&base, &mut other, &WWW, 1000.0, 1000);
        assert_eq!(files.read("/tmp/a"), Err(FsError::NotFound));
        assert_eq!(files.read("/var/www/html/index.php").unwrap(), "<?php\n");
    }
}
