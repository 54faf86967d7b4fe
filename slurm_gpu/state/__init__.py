"""What a node remembers: the two-phase job journal (``journal``), the task files the TaskProlog reads
(``task_env``) and the file primitives they share (``fsutil``: locks, atomic writes, fsync).
"""
