"""The device side as installed data: the firmware (`firmware/`) and the boards
(`boards/`), as in the repository. An installed `theca` compiles and runs them from
here; a checkout uses the repository's folders (theca.paths)."""
