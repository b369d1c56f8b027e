"""`edgevlm reproduce seed000|seed004`: the seed papers' results beside ours, each with a verdict.

One module per seed (seed000: Song & Kim, seed004: Hsu et al.), `at_scale` for the many-device
question, `items` for the item/check/verdict types and the trace-column requirements, and `report`
for report.html and reproduce.json. `cli.register` adds the sub-command.
"""
