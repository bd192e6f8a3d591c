//! Exactly-once requests: a control write wrapped in [`Command::Once`] applies once per request id.

use super::Applied;
use crate::store::*;

impl State {
    /// Applies [`Command::Once`].
    pub(super) fn once(
        &mut self,
        request: &RequestId,
        now_ms: &u64,
        reply: &Option<Vec<u8>>,
        cmd: &Command,
    ) -> Applied {
        if matches!(*cmd, Command::Once { .. } | Command::Batch { .. }) {
            return (
                Response::Rejected("a request within a request".into()),
                vec![],
            );
        }
        let pruned = request::prune(&mut self.requests, *now_ms, None);
        let mut keys: Vec<String> = pruned.iter().map(request::request_key).collect();
        if let Some(first) = self.requests.get(request) {
            return (Response::Duplicate(first.reply.clone()), keys);
        }
        let (response, changed) = self.apply(cmd);
        keys.extend(changed);
        if response == Response::Ok {
            let applied = AppliedRequest {
                at_ms: *now_ms,
                reply: reply.clone(),
            };
            let pruned = request::prune(&mut self.requests, *now_ms, Some(&applied));
            keys.extend(pruned.iter().map(request::request_key));
            self.requests.insert(request.clone(), applied);
            keys.push(request::request_key(request));
        }
        (response, keys)
    }
}
