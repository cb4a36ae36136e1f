"""Operations: one function per command, called by the CLI, returning results to render."""
