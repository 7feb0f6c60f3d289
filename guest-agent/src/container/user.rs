//! Users and groups from the container's own /etc/passwd and /etc/group
//! (the agent is static and has no NSS, and the guest's users are not the
//! container's anyway), as runc reads them.

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// The entries of a passwd file; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// The entries of a group file; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Who the process runs as, once the container's files are consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory, for HOME when the env lacks it.
    pub home: String,
}

/// Resolves the process user: `username` (if given) names a passwd entry
/// whose uid and gid win, and the groups listing that name are added to
/// `additional_gids`; otherwise the numeric ids stand as given.
pub fn resolve_user(
    passwd: &str,
    group: &str,
    username: Option<&str>,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
) -> Result<ResolvedUser, String> {
    let users = parse_passwd(passwd);
    let mut groups: Vec<u32> = additional_gids.to_vec();
    let (uid, gid, name) = match username {
        Some(name) => {
            let e = users.iter().find(|e| e.name == name).ok_or_else(|| {
                format!("process.user.username: no user {name:?} in the container's /etc/passwd")
            })?;
            (e.uid, e.gid, Some(e.name.clone()))
        }
        None => (uid, gid, None),
    };
    if let Some(name) = &name {
        for g in parse_group(group) {
            if g.members.iter().any(|m| m == name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    let home = users
        .iter()
        .find(|e| e.uid == uid)
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1001:\naudio:x:29: app \nbad\n";

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1001,
                home: "/home/app".into()
            }
        );
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 4);
        assert_eq!(g[1].members, vec!["root", "app"]);
        assert_eq!(g[3].members, vec!["app"]);
    }

    #[test]
    fn username_wins_and_brings_its_groups() {
        let u = resolve_user(PASSWD, GROUP, Some("app"), 0, 0, &[5]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.groups, vec![5, 10, 29]);
        assert_eq!(u.home, "/home/app");
        let e = resolve_user(PASSWD, GROUP, Some("ghost"), 0, 0, &[]).unwrap_err();
        assert!(
            e.contains("process.user.username") && e.contains("ghost"),
            "{e}"
        );
    }

    #[test]
    fn numeric_ids_stand_and_home_falls_back() {
        let u = resolve_user(PASSWD, GROUP, None, 1000, 7, &[8]).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 7, vec![8]));
        assert_eq!(u.home, "/home/app");
        let u = resolve_user("", "", None, 4242, 4242, &[]).unwrap();
        assert_eq!(u.home, "/");
    }
}
