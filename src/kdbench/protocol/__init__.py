"""The study: the paper's protocol, its teachers' targets, your own teacher, presets."""
