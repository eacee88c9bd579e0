"""One change to llama.cpp's server before it is built: a chat template's refusal is a 400.

A chat template that raises (Gemma's "Conversation roles must alternate ...") makes
llama.cpp's server answer 500, a server error, which clients retry; vLLM and the
Hugging Face stack answer 400, the request's fault, and that is what the tests must
meet. The server already maps ``std::invalid_argument`` to 400, so the call that
applies the template rethrows its error as one. Nothing else changes.

    python patch_llama_server.py path/to/llama.cpp
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["patch"]

ORIGINAL = "    auto chat_params = common_chat_templates_apply(opt.tmpls.get(), inputs);\n"
PATCHED = (
    "    // mailcoach tests: a template that refuses the messages is a bad request (400),\n"
    "    // as vLLM answers, not a server error (500).\n"
    "    auto chat_params = [&]() {\n"
    "        try {\n"
    "            return common_chat_templates_apply(opt.tmpls.get(), inputs);\n"
    "        } catch (const std::exception & e) {\n"
    "            throw std::invalid_argument(e.what());\n"
    "        }\n"
    "    }();\n"
)


def patch(llama_cpp: Path) -> None:
    source = llama_cpp / "tools" / "server" / "server-common.cpp"
    text = source.read_text()
    if PATCHED in text:
        return
    if text.count(ORIGINAL) != 1:
        raise SystemExit(f"{source}: the line to patch is not there once; "
                         "a new llama.cpp needs a new patch")
    source.write_text(text.replace(ORIGINAL, PATCHED))


if __name__ == "__main__":
    patch(Path(sys.argv[1]))
    print(f"patched {sys.argv[1]}: chat template errors answer 400")
