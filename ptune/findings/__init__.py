"""The paper's six findings at small scale (issue #33; `make paper`, `python -m
ptune.findings`): the points (`design`), running them (`runner`), reading them (`summary`)
and drawing them (`figures`)."""
