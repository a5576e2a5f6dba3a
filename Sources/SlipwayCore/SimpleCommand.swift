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

    /// The argument vector when `script` can be exec'd directly; nil when it needs a shell.
    public static func arguments(_ script: String) -> [String]? {
        let trimmed = script.trimmingWhitespaceAndNewlines()
        guard !trimmed.isEmpty, trimmed.count <= 4096, !trimmed.contains(where: { special.contains($0) }) else { return nil }
        let words = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first, !builtins.contains(first) else { return nil }
        return words
    }
}

extension String {
    func trimmingWhitespaceAndNewlines() -> String {
        var slice = Substring(self)
        while let c = slice.first, c == " " || c == "\t" || c == "\n" || c == "\r" { slice = slice.dropFirst() }
        while let c = slice.last, c == " " || c == "\t" || c == "\n" || c == "\r" { slice = slice.dropLast() }
        return String(slice)
    }
}
