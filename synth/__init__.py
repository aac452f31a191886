"""Synthetic training data from a plain-language task, written by a teacher LLM.

* `synth.generate.synthesize(task, client, seed)`: the pipeline (plan → ask → clean → filter →
  de-duplicate → split), returning chat rows and a report.
* `synth.teacher.TeacherClient`: an OpenAI-compatible chat client with retries, a token budget and
  cooperative cancel.
* `synth.llama_server.serve_gguf(bundled_teacher_gguf())`: the offline default teacher,
  SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.
* `synth.prompts`: every prompt text, versioned; `synth.filters`: cleaning and de-duplication.
"""
