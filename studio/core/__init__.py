"""The ground floor: services that `data/`, `engine/`, `eval/` and `ui/` all use, importing none of them.

Device detection (`device`), the machine-wide accelerator lock (`lock`), atomic writes (`atomic`),
Hub access (`hub`), the folder-name rule (`names`), the one path resolver (`resolve`) and the
offline CLIP tokenizer (`tokenizer`). Nothing here imports `studio.data`, `studio.engine`,
`studio.eval` or `studio.ui`.
"""
