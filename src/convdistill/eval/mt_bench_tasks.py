"""MT-Bench-101's tasks: code -> (name, what its judge looks for in a reply). Its own module so
that the suite schema (which checks a case's task) and the importer (which writes the judge
prompts) both read it, and neither imports the other."""

# MT-Bench-101's 13 tasks: code -> (ability, what the judge looks for; our wording).
MT_BENCH_101_TASKS: dict[str, tuple[str, str]] = {
    "CM": ("context memory", "Does the reply recall what the user said in earlier turns and use it correctly? "
           "Forgetting or contradicting earlier details is a serious fault."),
    "AR": ("anaphora resolution", "Does the reply work out what the user's pronouns and references ('it', "
           "'that one', 'the second') point to in earlier turns, and answer about the right thing?"),
    "SI": ("separate input", "The first turn gives only a task and later turns give the material for it. "
           "At the first turn a good reply asks for or waits for the material; later replies apply the task "
           "to the material given, without the user repeating the task."),
    "TS": ("topic shift", "The user has moved to a new subject. Does the reply answer the new subject fully, "
           "without dragging in the earlier one?"),
    "CC": ("content confusion", "Earlier turns look like this one but ask something different. Does the reply "
           "answer exactly the current question, not the earlier ones?"),
    "CR": ("content rephrasing", "Does the reply rewrite the earlier content as the user now asks (shorter, "
           "simpler, another audience) while keeping its meaning?"),
    "FR": ("format rephrasing", "Does the reply put the earlier content into the format the user now asks for "
           "(a table, a list, JSON, a poem) while keeping its meaning?"),
    "SC": ("self-correction", "The user points out a real mistake in an earlier reply. Does the reply admit it "
           "and give the corrected answer?"),
    "SA": ("self-affirmation", "The user disputes an earlier reply that was right. Does the reply keep the "
           "correct answer, politely and with reasons, instead of giving in?"),
    "MR": ("mathematical reasoning", "Is the final answer correct and are the steps sound and clear, using "
           "what earlier turns established? Check it against the reference solution."),
    "GR": ("general reasoning", "Is the conclusion correct and is the reasoning sound and clear, using what "
           "earlier turns established? Check it against the reference solution."),
    "IC": ("instruction clarification", "Where the request is ambiguous or lacks details, does the reply ask a "
           "focused clarifying question; once the user has clarified, does it answer fully?"),
    "PI": ("proactive interaction", "Does the reply engage with the user, for instance with a relevant question "
           "or suggestion that moves the conversation on, instead of a flat or closed answer?"),
}
