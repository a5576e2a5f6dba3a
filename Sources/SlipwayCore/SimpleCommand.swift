/// Like make, Slipway runs a command without a shell when it has no shell syntax: one exec instead
/// of two. Anything a shell would interpret (quotes, variables, globs, redirections, pipes, several
/// lines, builtins, assignments) goes through `bash -e -o pipefail -c` as usual.
public enum SimpleCommand {
    static let special: Set<Character> = ["\"", "'", "`", "$", "\\", "#", "&", "|", ";", "<", ">", "(", ")", "{", "}", "[", "]", "*", "?", "~", "!", "=", "%", "^", "\n", "\r"]

    /// Shell builtins and keywords (bash's and POSIX sh's) that must not be exec'd as programs.
    static let builtins: Set<String> = [
        ".", ":", "alias", "bg", "bind", "break", "builtin", "caller", "case", "cd", "command", "compgen", "complete",
        "continue", "declare", "dirs", "disown", "do", "done", "echo", "elif", "else", "enable", "esac", "eval", "exec",
        "exit", "export", "false", "fc", "fg", "fi", "for", "function", "getopts", "hash", "help", "history", "if", "in",
        "jobs", "kill", "let", "local", "logout", "mapfile", "popd", "printf", "pushd", "pwd", "read", "readarray",
        "readonly", "return", "select", "set", "shift", "shopt", "source", "suspend", "test", "then", "time", "times",
        "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    ]

    /// `special` as a table of bytes: every special character is ASCII, and no byte of a multi-byte UTF-8
    /// sequence is ASCII, so a byte scan finds exactly them (and runs once per step start).
    static let specialBytes: [Bool] = (0..<256).map { byte in byte < 128 && special.contains(Character(Unicode.Scalar(UInt8(byte)))) }

    /// The argument vector when `script` can be exec'd directly; nil when it needs a shell.
    public static func arguments(_ script: String) -> [String]? {
        var script = script
        return script.withUTF8 { all -> [String]? in
            func blank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
            var start = 0, end = all.count
            while start < end, blank(all[start]) { start += 1 }
            while end > start, blank(all[end - 1]) { end -= 1 }
            guard start < end else { return nil }
            let body = UnsafeBufferPointer(rebasing: all[start..<end])
            if body.count > 4096, String(decoding: body, as: UTF8.self).count > 4096 { return nil }
            var words: [String] = []
            var wordStart = -1
            for index in 0..<body.count {
                let byte = body[index]
                if specialBytes[Int(byte)] { return nil }
                if byte == 0x20 || byte == 0x09 {
                    if wordStart >= 0 {
                        words.append(String(decoding: UnsafeBufferPointer(rebasing: body[wordStart..<index]), as: UTF8.self))
                        wordStart = -1
                    }
                } else if wordStart < 0 {
                    wordStart = index
                }
            }
            if wordStart >= 0 { words.append(String(decoding: UnsafeBufferPointer(rebasing: body[wordStart...]), as: UTF8.self)) }
            guard let first = words.first, !builtins.contains(first) else { return nil }
            return words
        }
    }
}
