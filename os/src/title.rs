//! Process titles: what `ps` and `top` show for the supervisor, the group guard and each
//! embedded worker, so that they can be told apart at a glance, as unicorn and puma do:
//! `drover: supervisor hello 4/4 ready`, `drover: guard hello`, `drover: worker 3 gen 2
//! hello`. Command workers keep their own titles (they exec their program).
//!
//! Two places: the command line (`/proc/<pid>/cmdline`, what `ps` shows), which is the
//! memory of the process's original argv strings, overwritten in place; and the name
//! (`/proc/<pid>/comm`, 15 bytes, what `top` shows by default), set with
//! `prctl(PR_SET_NAME)`: `drover-sup`, `drover-guard`, `drover-w3`.
//!
//! Overwriting the argv strings would change what `std::env::args` returns later (the
//! standard library reads them through the original argv array on every call: a live
//! upgrade's relaunch does): so [`init`] first copies every string and points the argv
//! array, and glibc's `program_invocation_name`, at the copies, as setproctitle does. The
//! title gets only the room of the original argv strings (the environment strings after
//! them stay where they are, so /proc/<pid>/environ still shows the environment): a longer
//! title is cut. The array is found at `start_stack` (/proc/self/stat), where the kernel
//! put `argc` and then `argv`, and checked against what the standard library saw before
//! anything is changed; if anything does not match, there are no titles, and nothing else
//! changes. Setting a title is a memory write, plus one `prctl` for the name: the
//! supervisor sets it only when what it shows changed.

use std::ffi::{CStr, CString};
use std::sync::{Mutex, OnceLock};

/// The argv strings' memory: start address and length.
static AREA: OnceLock<(usize, usize)> = OnceLock::new();
/// One writer at a time (the area is plain memory).
static WRITING: Mutex<()> = Mutex::new(());

extern "C" {
    // glibc's and musl's copies of argv[0] and its base name (err(3), error(3)).
    static mut program_invocation_name: *mut libc::c_char;
    static mut program_invocation_short_name: *mut libc::c_char;
}

/// Prepares the argv area for titles, once; the supervisor calls it at start, single-
/// threaded. Returns why not, for the log, when titles are not possible.
pub fn init() -> Result<(), String> {
    if AREA.get().is_some() {
        return Ok(());
    }
    crate::forking::single_threaded()?;
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let (start_stack, arg_start, arg_end) = stack_fields(&stat)?;
    let argc = std::env::args_os().count();
    if arg_end <= arg_start || start_stack == 0 || argc == 0 {
        return Err("no argv area".into());
    }
    let argv = (start_stack + size_of::<usize>()) as *mut *mut libc::c_char;
    // SAFETY: `start_stack` is where the kernel put argc for this process, on the main
    // thread's stack, which stays mapped for the process's life; every read below stays
    // within argc + 2 words from it, checked one by one against what the standard library
    // saw (argc) and what the kernel says (the argv strings' range) before anything is
    // written.
    unsafe {
        if *(start_stack as *const usize) != argc || !(*argv.add(argc)).is_null() {
            return Err("argv is not where the kernel put it".into());
        }
        for i in 0..argc {
            let p = *argv.add(i) as usize;
            if !(arg_start..arg_end).contains(&p) || (i == 0 && p != arg_start) {
                return Err("argv is not where the kernel put it".into());
            }
        }
    }
    // SAFETY: the process is single-threaded (checked above), so nothing reads the argv
    // array or the glibc names while they are repointed; every entry is a valid C string
    // (checked above), and each copy is leaked, so it lives as long as the process.
    unsafe {
        for i in 0..argc {
            let copy = CString::from(CStr::from_ptr(*argv.add(i))).into_raw();
            let old = *argv.add(i);
            *argv.add(i) = copy;
            if i == 0 {
                let name = std::ptr::addr_of_mut!(program_invocation_name);
                let short = std::ptr::addr_of_mut!(program_invocation_short_name);
                if *name == old {
                    *name = copy;
                }
                let at = (*short as usize).wrapping_sub(old as usize);
                if (*short as usize) >= old as usize && at <= libc::strlen(copy) {
                    *short = copy.add(at);
                }
            }
        }
    }
    let _ = AREA.set((arg_start, arg_end - arg_start));
    Ok(())
}

/// `start_stack`, `arg_start` and `arg_end` (fields 28, 48, 49) of /proc/self/stat.
fn stack_fields(stat: &str) -> Result<(usize, usize, usize), String> {
    // "pid (comm) state ...": comm may hold spaces and parentheses; field 3 follows the
    // last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("malformed /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<usize, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/self/stat has no field {n}"))
    };
    Ok((field(28)?, field(48)?, field(49)?))
}

/// Shows `text` as the command line (cut to the room there is; nothing before `init`) and
/// `name` as the process name (cut to 15 bytes).
pub fn set(text: &str, name: &str) {
    set_cmdline(text);
    set_name(name);
}

/// The command line only: a memory write, no system call.
pub fn set_cmdline(text: &str) {
    let Some(&(start, len)) = AREA.get() else {
        return;
    };
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let bytes = text.as_bytes();
    // The last byte stays NUL: the kernel shows the area up to it and no further.
    let n = bytes.len().min(len - 1);
    // SAFETY: [start, start + len) is this process's argv strings' memory, which `init`
    // detached from everything that read it (argv points at copies); the lock makes this
    // the only writer.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area[..n].copy_from_slice(&bytes[..n]);
        area[n..].fill(0);
    }
}

fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    if let Ok(c) = CStr::from_bytes_until_nul(&buf) {
        let _ = nix::sys::prctl::set_name(c);
    }
}

/// The program's name in titles: the base name of its path.
pub fn app_name(program: &std::path::Path) -> String {
    program
        .file_name()
        .map_or_else(|| "drover".into(), |n| n.to_string_lossy().into_owned())
}

/// `drover: worker 3 gen 2 hello`, named `drover-w3`.
pub fn worker(slot: u32, generation: u32, app: &str) {
    set(
        &format!("drover: worker {slot} gen {generation} {app}"),
        &format!("drover-w{slot}"),
    );
}

/// What the supervisor's title shows; compared after each loop turn, formatted only when
/// it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisorView {
    /// `supervisor`, `successor` (of a live upgrade, until it takes over) or `parent`
    /// (`--supervise`).
    pub role: &'static str,
    pub ready: u32,
    pub target: u32,
    /// `stopping`, `upgrading`, … or nothing while it simply runs.
    pub state: Option<&'static str>,
}

impl SupervisorView {
    /// `drover: supervisor hello 3/4 ready, upgrading`.
    pub fn text(&self, app: &str) -> String {
        let state = self.state.map_or(String::new(), |s| format!(", {s}"));
        format!(
            "drover: {} {app} {}/{} ready{state}",
            self.role, self.ready, self.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_comm() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[28 - 3] = "140000".into();
        fields[48 - 3] = "150000".into();
        fields[49 - 3] = "150100".into();
        let stat = format!("42 (a) b (c)) {}", fields.join(" "));
        assert_eq!(stack_fields(&stat), Ok((140000, 150000, 150100)));
        assert!(stack_fields("42 (x) R 1").is_err());
    }

    #[test]
    fn the_supervisor_title_names_role_app_counts_and_state() {
        let v = SupervisorView {
            role: "supervisor",
            ready: 3,
            target: 4,
            state: None,
        };
        assert_eq!(v.text("hello"), "drover: supervisor hello 3/4 ready");
        let v = SupervisorView {
            state: Some("stopping"),
            ..v
        };
        assert_eq!(v.text("app"), "drover: supervisor app 3/4 ready, stopping");
    }
}
