"""The Theca wire protocol, defined once with construct."""
