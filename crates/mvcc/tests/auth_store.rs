//! The auth state in the store: changed only by applied commands, kept across a restart and in
//! snapshots, and a client's command (`Command::As`) checked against the state of its own
//! position — a permission revoked earlier in the same batch stops it.

use mvcc::auth::{AuthCommand, Caller, PermType, Permission, ROOT};
use mvcc::{Command, Error, PutRequest, Store};

fn put(key: &str) -> Command {
    Command::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn setup() -> Vec<Command> {
    [
        AuthCommand::UserAdd {
            name: ROOT.into(),
            password: b"hash".to_vec(),
            no_password: false,
        },
        AuthCommand::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        },
        AuthCommand::UserAdd {
            name: "alice".into(),
            password: b"hash".to_vec(),
            no_password: false,
        },
        AuthCommand::RoleAdd { name: "w".into() },
        AuthCommand::RoleGrantPermission {
            name: "w".into(),
            perm: Permission {
                perm_type: PermType::Write,
                key: b"a".to_vec(),
                range_end: Vec::new(),
            },
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "w".into(),
        },
        AuthCommand::Enable {
            token_key: vec![7; 32],
        },
    ]
    .into_iter()
    .map(Command::Auth)
    .collect()
}

fn outcomes(store: &Store, cmds: &[Command]) -> Vec<Result<(), Error>> {
    store
        .apply(cmds, &[], true)
        .expect("apply")
        .outcomes
        .into_iter()
        .map(|o| o.response.map(|_| ()))
        .collect()
}

#[test]
fn a_revoked_permission_stops_a_write_applied_after_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path().join("tandem.db")).expect("open");
    assert!(outcomes(&store, &setup()).iter().all(Result::is_ok));
    let auth = store.auth();
    assert!(auth.enabled);
    let alice = Caller {
        user: "alice".into(),
        auth_revision: auth.revision,
    };
    let root = Caller {
        user: ROOT.into(),
        auth_revision: auth.revision,
    };
    let as_alice = |c: Command| Command::As(alice.clone(), Box::new(c));
    let revoke = Command::As(
        root.clone(),
        Box::new(Command::Auth(AuthCommand::UserRevokeRole {
            user: "alice".into(),
            role: "w".into(),
        })),
    );
    let got = outcomes(
        &store,
        &[
            as_alice(put("a")),
            as_alice(put("b")),
            put("b"),
            as_alice(Command::Auth(AuthCommand::RoleAdd { name: "x".into() })),
            revoke,
            as_alice(put("a")),
        ],
    );
    assert_eq!(
        got,
        vec![
            Ok(()),
            Err(Error::PermissionDenied),
            // A member's own command is not a client's: not checked.
            Ok(()),
            Err(Error::PermissionDenied),
            Ok(()),
            // Taken before the revocation, applied after it.
            Err(Error::AuthOldRevision),
        ]
    );
    let nobody = Command::As(Caller::default(), Box::new(put("a")));
    assert_eq!(outcomes(&store, &[nobody]), vec![Err(Error::UserEmpty)]);
}

#[test]
fn the_auth_state_survives_a_restart_and_travels_in_snapshots() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("tandem.db");
    let before = {
        let store = Store::open(&path).expect("open");
        assert_eq!(
            store.auth().revision,
            1,
            "a new store is at auth revision 1"
        );
        outcomes(&store, &setup());
        store.auth()
    };
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.auth(), before);
    let mut snap = Vec::new();
    store.snapshot_to(&mut snap, "applied").expect("snapshot");
    let other = Store::open(dir.path().join("other.db")).expect("open");
    assert!(!other.auth().enabled);
    other.restore_from(&mut snap.as_slice()).expect("restore");
    assert_eq!(other.auth(), before);
}
