//! The chain anchor, and the check that keeps the chain from forking silently.
//!
//! A chain that starts again at record 1 from the zero hash while the audit system already
//! holds records 1…N of this site is a fork: two different records 1, both signed. It happens
//! when the database is deleted, replaced by an older copy, or lost with its disk. Three
//! witnesses outside the chain's own table say a chain already exists:
//!
//! - the **anchor file** beside the signing key (`<key>.chain`, or `[evidence].anchor_file`):
//!   the site, the newest record's sequence number and hash, and when; rewritten atomically
//!   after the start record is sealed, once a minute and at stop;
//! - the **uplink cursor** in the database: records the audit system acknowledged;
//! - the **audit system** itself (`GET …/status`), asked when the chain is empty.
//!
//! [`check_start`] compares them with the database before the agent seals anything. If one says
//! the chain went further than the database holds, or holds another record at the anchored
//! position, the agent refuses to start and says how to go on: restore the database, or declare
//! a new chain with `sealwatch evidence new-chain --reason …`, whose first record (kind
//! [`NEW_CHAIN`]) names the previous chain's head (or says it is lost), so an auditor and the
//! audit system see the break instead of a silent second record 1.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Head;

/// Kind of the first record of a declared new chain.
pub const NEW_CHAIN: &str = "new_chain";

/// The anchor file format tag.
const FORMAT: &str = "sealwatch-anchor-v1";

/// The longest anchor file read (it is about 300 bytes).
const MAX_ANCHOR_BYTES: u64 = 64 * 1024;

/// The anchor file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// `sealwatch-anchor-v1`.
    pub format: String,
    /// Site id.
    pub site: String,
    /// Newest record known to be sealed.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// When the anchor was written, ms.
    pub updated_ms: i64,
    /// The database it was read from.
    pub database: String,
}

impl Anchor {
    /// The anchor of `head` of `site`'s chain in `database`, at `now_ms`.
    pub fn new(site: &str, head: Head, database: &Path, now_ms: i64) -> Anchor {
        Anchor {
            format: FORMAT.to_owned(),
            site: site.to_owned(),
            seq: head.seq,
            hash: hex::encode(head.hash),
            updated_ms: now_ms,
            database: database.display().to_string(),
        }
    }
}

/// Anchor file problems; messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Cannot read or write it.
    #[error("chain anchor {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// It is not an anchor.
    #[error("chain anchor {path} is not a sealwatch chain anchor ({why}); move it away only if you know the chain it names is not this site's")]
    Malformed {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The default anchor file of a key file: `<key>.chain`.
pub fn default_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".chain");
    PathBuf::from(name)
}

/// Reads an anchor; `None` if there is none.
pub fn read(path: &Path) -> Result<Option<Anchor>, AnchorError> {
    let io = |source| AnchorError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    file.take(MAX_ANCHOR_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    let malformed = |why: String| AnchorError::Malformed {
        path: path.to_owned(),
        why,
    };
    if text.len() as u64 > MAX_ANCHOR_BYTES {
        return Err(malformed(format!("longer than {MAX_ANCHOR_BYTES} bytes")));
    }
    let anchor: Anchor = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if anchor.format != FORMAT {
        return Err(malformed(format!("format '{}'", anchor.format)));
    }
    Ok(Some(anchor))
}

/// Writes an anchor atomically: a temporary file, synced, renamed over the old one.
pub fn write(path: &Path, anchor: &Anchor) -> Result<(), AnchorError> {
    let io = |source| AnchorError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec_pretty(anchor).map_err(|e| io(std::io::Error::other(e)))?;
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&text)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; a directory that cannot be opened only weakens that.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// What the agent knows at start, before it seals anything.
#[derive(Debug, Clone, Default)]
pub struct StartFacts {
    /// This site.
    pub site: String,
    /// The database's chain head.
    pub db_head: Option<Head>,
    /// The first record the database still holds (later than 1 after pruning).
    pub db_first_seq: Option<u64>,
    /// The database's hash of the anchored record, if it still holds it.
    pub db_hash_at_anchor: Option<String>,
    /// The anchor file's content.
    pub anchor: Option<Anchor>,
    /// The audit uplink's acknowledged position in the database.
    pub cursor: u64,
    /// What the audit system says it holds (its head and that record's hash), if it was asked
    /// and answered.
    pub receiver: Option<(u64, Option<String>)>,
    /// The database's hash of the record the audit system names, if it still holds it.
    pub db_hash_at_receiver: Option<String>,
    /// The database's chain begins with a declared new chain (record 1 of kind [`NEW_CHAIN`]),
    /// which the audit system may not have taken yet.
    pub new_chain_declared: bool,
}

/// Whether the database should still hold record `seq` (it was not pruned before its first).
fn held(facts: &StartFacts, seq: u64) -> bool {
    seq >= 1 && facts.db_first_seq.is_some_and(|first| first <= seq)
}

/// Why the agent will not continue (or start) the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkError {
    /// The anchor names another site.
    #[error("the chain anchor names site '{anchored}', not '{site}': this key's chain belongs to another site")]
    OtherSite {
        /// Site of the anchor.
        anchored: String,
        /// This site.
        site: String,
    },
    /// The database holds less of the chain than the anchor says was sealed.
    #[error("the database's chain ends at record {db_seq}, but the chain anchor says record {anchored_seq} was sealed (at {anchored_at}): the database was deleted or replaced by an older copy")]
    BehindAnchor {
        /// Database head.
        db_seq: u64,
        /// Anchored position.
        anchored_seq: u64,
        /// When, as text.
        anchored_at: String,
    },
    /// The anchored record is missing from the database, though later ones are there.
    #[error("record {seq}, which the chain anchor names, is missing from the database although records after it are there: it was deleted")]
    MissingAnchored {
        /// Position.
        seq: u64,
    },
    /// The audit system holds another record at the position it names.
    #[error("the audit system holds record {seq} with hash {theirs}, but the database's record {seq} has hash {ours}: the database holds another chain")]
    ReceiverOtherChain {
        /// Position.
        seq: u64,
        /// Its hash.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The database holds another record at the anchored position.
    #[error("record {seq} in the database has hash {ours}, but the chain anchor says {anchored}: the database holds another chain")]
    OtherChain {
        /// Position.
        seq: u64,
        /// Database hash.
        ours: String,
        /// Anchored hash.
        anchored: String,
    },
    /// The audit system acknowledged more than the database holds.
    #[error("the audit system acknowledged records up to {acked}, but the database's chain ends at record {db_seq}: records were deleted")]
    BehindCursor {
        /// Database head.
        db_seq: u64,
        /// Acknowledged position.
        acked: u64,
    },
    /// The audit system holds records of this site and the database none (or fewer).
    #[error("the audit system holds this site's records up to {holds}, but the database's chain ends at record {db_seq}: starting again would fork the chain it holds")]
    BehindReceiver {
        /// Database head.
        db_seq: u64,
        /// What the audit system holds.
        holds: u64,
    },
}

/// What a person can do about a [`ForkError`].
pub const FORK_HELP: &str = "Restore the database that holds the chain; or, if it is lost for good, declare a new chain on an empty database: sealwatch evidence new-chain --config FILE --reason \"...\" --by NAME (its first record names the previous chain's head, so the break is on the record)";

/// Refuses to continue from a database that holds less of the chain than a witness says was
/// sealed, or another chain. Pure.
pub fn check_start(facts: &StartFacts) -> Result<(), ForkError> {
    let db = facts.db_head.unwrap_or(Head::EMPTY);
    if let Some(anchor) = &facts.anchor {
        if anchor.site != facts.site {
            return Err(ForkError::OtherSite {
                anchored: anchor.site.clone(),
                site: facts.site.clone(),
            });
        }
        if db.seq < anchor.seq {
            return Err(ForkError::BehindAnchor {
                db_seq: db.seq,
                anchored_seq: anchor.seq,
                anchored_at: crate::rules::time::utc_text(anchor.updated_ms),
            });
        }
        if held(facts, anchor.seq) {
            match &facts.db_hash_at_anchor {
                None => return Err(ForkError::MissingAnchored { seq: anchor.seq }),
                Some(ours) if !ours.eq_ignore_ascii_case(&anchor.hash) => {
                    return Err(ForkError::OtherChain {
                        seq: anchor.seq,
                        ours: ours.clone(),
                        anchored: anchor.hash.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    if facts.cursor > db.seq {
        return Err(ForkError::BehindCursor {
            db_seq: db.seq,
            acked: facts.cursor,
        });
    }
    // A declared new chain is not the chain the audit system holds until it takes the
    // declaration (at the first upload); its word about the old chain does not apply.
    if let (Some((holds, theirs)), false) = (&facts.receiver, facts.new_chain_declared) {
        if *holds > db.seq {
            return Err(ForkError::BehindReceiver {
                db_seq: db.seq,
                holds: *holds,
            });
        }
        if let (Some(theirs), Some(ours), true) =
            (theirs, &facts.db_hash_at_receiver, held(facts, *holds))
        {
            if !theirs.eq_ignore_ascii_case(ours) {
                return Err(ForkError::ReceiverOtherChain {
                    seq: *holds,
                    theirs: theirs.clone(),
                    ours: ours.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, byte: u8) -> Head {
        Head {
            seq,
            hash: [byte; 32],
        }
    }

    fn facts(db: Option<Head>, anchor: Option<Head>) -> StartFacts {
        StartFacts {
            site: "s".into(),
            db_head: db,
            db_first_seq: db.filter(|h| h.seq > 0).map(|_| 1),
            anchor: anchor.map(|h| Anchor::new("s", h, Path::new("db"), 0)),
            ..StartFacts::default()
        }
    }

    #[test]
    fn a_first_start_with_no_witness_starts_the_chain() {
        assert_eq!(check_start(&facts(None, None)), Ok(()));
    }

    #[test]
    fn an_empty_database_with_an_anchor_is_refused() {
        let err = check_start(&facts(None, Some(head(4711, 7)))).unwrap_err();
        assert!(matches!(
            err,
            ForkError::BehindAnchor {
                db_seq: 0,
                anchored_seq: 4711,
                ..
            }
        ));
        assert!(err.to_string().contains("deleted or replaced"), "{err}");
    }

    #[test]
    fn another_chain_at_the_anchored_position_is_refused() {
        let mut f = facts(Some(head(10, 1)), Some(head(8, 2)));
        f.db_hash_at_anchor = Some(hex::encode([3u8; 32]));
        assert!(matches!(
            check_start(&f),
            Err(ForkError::OtherChain { seq: 8, .. })
        ));
        f.db_hash_at_anchor = Some(hex::encode([2u8; 32]).to_uppercase());
        assert_eq!(check_start(&f), Ok(()), "same hash, any case");
        // The anchored record deleted while later ones remain.
        f.db_hash_at_anchor = None;
        assert_eq!(check_start(&f), Err(ForkError::MissingAnchored { seq: 8 }));
        // Pruned after its retention (the database now starts later): nothing to compare.
        f.db_first_seq = Some(9);
        assert_eq!(check_start(&f), Ok(()));
    }

    #[test]
    fn an_acknowledged_position_beyond_the_database_is_refused() {
        let mut f = facts(None, None);
        f.cursor = 12;
        assert!(matches!(
            check_start(&f),
            Err(ForkError::BehindCursor {
                db_seq: 0,
                acked: 12
            })
        ));
    }

    #[test]
    fn an_audit_system_that_holds_more_or_another_chain_is_refused() {
        let mut f = facts(None, None);
        f.receiver = Some((3, None));
        assert!(matches!(
            check_start(&f),
            Err(ForkError::BehindReceiver {
                db_seq: 0,
                holds: 3
            })
        ));
        f.receiver = Some((0, None));
        assert_eq!(check_start(&f), Ok(()));
        // A restored copy: as long as the audit system, but another record 5.
        let mut f = facts(Some(head(7, 1)), None);
        f.receiver = Some((5, Some(hex::encode([4u8; 32]))));
        f.db_hash_at_receiver = Some(hex::encode([5u8; 32]));
        assert!(matches!(
            check_start(&f),
            Err(ForkError::ReceiverOtherChain { seq: 5, .. })
        ));
        f.db_hash_at_receiver = Some(hex::encode([4u8; 32]));
        assert_eq!(check_start(&f), Ok(()));
        // A declared new chain: the audit system still holds the old one until it takes it.
        let mut f = facts(Some(head(1, 1)), None);
        f.receiver = Some((900, Some(hex::encode([4u8; 32]))));
        f.new_chain_declared = true;
        assert_eq!(check_start(&f), Ok(()));
    }

    #[test]
    fn an_anchor_of_another_site_is_refused() {
        let mut f = facts(None, Some(head(1, 1)));
        f.site = "other".into();
        assert!(matches!(check_start(&f), Err(ForkError::OtherSite { .. })));
    }

    #[test]
    fn anchors_round_trip_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.chain");
        assert!(read(&path).unwrap().is_none());
        let anchor = Anchor::new("s", head(5, 9), Path::new("/var/lib/x.db"), 1234);
        write(&path, &anchor).unwrap();
        assert_eq!(read(&path).unwrap(), Some(anchor));
        std::fs::write(&path, "not json").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("k.chain"), "{err}");
        std::fs::write(&path, vec![b' '; 70_000]).unwrap();
        assert!(read(&path).is_err(), "bounded");
    }
}
