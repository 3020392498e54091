//! Kernel arguments for an A/B slot (`spec.kernelArguments`): the new slot's arguments
//! are the running slot's, minus what `remove` names, plus what `add` lists. They live in
//! the slot's own boot variable `osroll_cmdline_<A|B>`, which the shipped GRUB and U-Boot
//! scripts append to that slot's kernel command line, so they take effect with the boot
//! into the new slot, are gone again if the bootloader falls back, and carry over to
//! every later image like OSTree's kernel arguments do.
//!
//! `remove` takes out an exact `key=value`, or every value of a bare `key`; `add`
//! appends what is not already there. Only the slot's own variable can be edited:
//! arguments of `osroll_cmdline` (both slots) or built into the script stay.

/// Arguments the scripts set themselves and the agent relies on.
const RESERVED: [&str; 2] = ["root", "osroll.slot"];

/// An argument that cannot go into a boot variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel argument {arg:?} {why}")]
pub struct KargError {
    /// The argument as given.
    pub arg: String,
    /// What is wrong with it.
    pub why: &'static str,
}

fn key(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// Check that `arg` is one plain word the scripts can pass on unchanged.
pub fn check(arg: &str) -> Result<(), KargError> {
    let bad = |why| {
        Err(KargError {
            arg: arg.to_string(),
            why,
        })
    };
    if arg.is_empty() {
        return bad("is empty");
    }
    if arg
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'\\$;`{}".contains(c))
    {
        return bad("has whitespace, a quote or a character the boot scripts would interpret");
    }
    if RESERVED.contains(&key(arg)) {
        return bad("is set by the boot script for the slot and cannot be changed");
    }
    Ok(())
}

/// The slot arguments that follow from `current` (space-separated) and the change.
pub fn edit(current: &str, add: &[String], remove: &[String]) -> Result<String, KargError> {
    for a in add.iter().chain(remove) {
        check(a)?;
    }
    let removed = |a: &str| {
        remove
            .iter()
            .any(|r| a == r || (!r.contains('=') && key(a) == r))
    };
    let mut args: Vec<&str> = current.split_whitespace().filter(|a| !removed(a)).collect();
    for a in add {
        if !args.contains(&a.as_str()) {
            args.push(a);
        }
    }
    Ok(args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn removes_then_adds_keeping_order_and_no_duplicates() {
        let cur = "console=ttyS0 quiet mitigations=auto rd.debug";
        let got = edit(
            cur,
            &v(&["mitigations=off", "quiet", "nosmt"]),
            &v(&["mitigations", "rd.debug"]),
        )
        .unwrap();
        assert_eq!(got, "console=ttyS0 quiet mitigations=off nosmt");
        // An exact key=value removes only that value.
        assert_eq!(edit("a=1 a=2 b", &[], &v(&["a=1"])).unwrap(), "a=2 b");
        assert_eq!(edit("", &v(&["x"]), &[]).unwrap(), "x");
        assert_eq!(edit("x", &[], &v(&["x"])).unwrap(), "");
        // Applying the same change twice changes nothing more.
        let once = edit(cur, &v(&["nosmt"]), &v(&["quiet"])).unwrap();
        assert_eq!(edit(&once, &v(&["nosmt"]), &v(&["quiet"])).unwrap(), once);
    }

    #[test]
    fn refuses_what_the_scripts_cannot_carry() {
        for bad in [
            "",
            "a b",
            "x=\"y\"",
            "$(reboot)",
            "a;b",
            "root=/dev/sda1",
            "osroll.slot=B",
        ] {
            assert!(edit("", &v(&[bad]), &[]).is_err(), "{bad:?}");
        }
        assert!(edit("root=x", &[], &v(&["root"])).is_err());
        assert_eq!(
            edit("", &v(&["init=/sbin/init", "sysctl.kernel.panic=1"]), &[]).unwrap(),
            "init=/sbin/init sysctl.kernel.panic=1"
        );
    }
}
