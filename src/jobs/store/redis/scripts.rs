//! The store's Lua scripts, each run atomically by Redis, each with the
//! shared prelude (key names, the common steps) and the job fields a
//! lookup reads put in front.

use redis::Script;

use super::codec::META;

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) take: Script,
    pub(super) renew: Script,
    pub(super) finish: Script,
    pub(super) cancel: Script,
    pub(super) put_back: Script,
    pub(super) expire: Script,
    pub(super) hold: Script,
    pub(super) pause: Script,
    pub(super) take_over: Script,
    pub(super) discard: Script,
    pub(super) arm: Script,
    pub(super) delivery: Script,
    pub(super) take_deliveries: Script,
    pub(super) sweep: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let meta = META.map(|f| format!("'{f}'")).join(", ");
        let prelude = format!("local META = {{{meta}}}\n{}", include_str!("prelude.lua"));
        let script = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Scripts {
            create: script(include_str!("create.lua")),
            take: script(include_str!("take.lua")),
            renew: script(include_str!("renew.lua")),
            finish: script(include_str!("finish.lua")),
            cancel: script(include_str!("cancel.lua")),
            put_back: script(include_str!("put_back.lua")),
            expire: script(include_str!("expire.lua")),
            hold: script(include_str!("hold.lua")),
            pause: script(include_str!("pause.lua")),
            take_over: script(include_str!("take_over.lua")),
            discard: script(include_str!("discard.lua")),
            arm: script(include_str!("arm.lua")),
            delivery: script(include_str!("delivery.lua")),
            take_deliveries: script(include_str!("take_deliveries.lua")),
            sweep: script(include_str!("sweep.lua")),
        }
    }
}
