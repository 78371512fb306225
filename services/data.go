package services

import (
	"encoding/json"
	"errors"
	"unicode/utf8"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// checkData refuses data that is not what its format says: invalid JSON
// declared as JSON, invalid UTF-8 declared as text. Every transport's
// publishes and edits pass here, so a stored event always reads as its
// format says.
func checkData(format heraldv1.DataFormat, data []byte) error {
	switch format {
	case heraldv1.DataFormat_DATA_FORMAT_JSON:
		if !json.Valid(data) {
			return connect.NewError(connect.CodeInvalidArgument, errors.New(
				"invalid request: data: the format is JSON but the data is not a valid JSON value; send valid JSON, or another format (TEXT for plain text)"))
		}
	case heraldv1.DataFormat_DATA_FORMAT_TEXT:
		if !utf8.Valid(data) {
			return connect.NewError(connect.CodeInvalidArgument, errors.New(
				"invalid request: data: the format is TEXT but the data is not valid UTF-8; send UTF-8 text, or the BYTES format"))
		}
	}
	return nil
}
