/*
 * A stand-in for Intel's libtdx_attest, compiled by the tests (there is no TDX here).
 *
 * It exports the three functions attest.providers.libtdx calls, with the signatures of
 * tdx_attest.h, plus stub_* controls: the tests set the quote to return (the REPORTDATA the
 * caller passes is copied into it at the v4 offset 568) or an error code, and read back what
 * the last extend request contained and how many quotes are still unfreed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma pack(push, 1)
typedef struct { uint8_t d[16]; } tdx_uuid_t;
typedef struct { uint8_t d[64]; } tdx_report_data_t;
typedef struct {
    uint32_t version;
    uint64_t rtmr_index;
    uint8_t extend_data[48];
    uint32_t event_type;
    uint32_t event_data_size;
    uint8_t event_data[];
} tdx_rtmr_event_t;
#pragma pack(pop)

#define REPORT_DATA_OFFSET_V4 568

static const tdx_uuid_t ecdsa_p256_key_id = {{0xe8, 0x6c, 0x04, 0x6e, 0x8c, 0xc4, 0x4d, 0x95,
                                              0x81, 0x73, 0xfc, 0x43, 0xc1, 0xfa, 0x4f, 0x3f}};

static uint8_t *template_quote;
static uint32_t template_size;
static uint32_t next_result;
static int outstanding_quotes;
static uint32_t last_version;
static uint64_t last_rtmr_index;
static uint8_t last_extend_data[48];
static uint32_t last_event_data_size;
static int extend_calls;

void stub_set_quote(const uint8_t *quote, uint32_t size) {
    free(template_quote);
    template_quote = malloc(size);
    memcpy(template_quote, quote, size);
    template_size = size;
}

void stub_set_result(uint32_t code) { next_result = code; }
int stub_outstanding_quotes(void) { return outstanding_quotes; }
int stub_extend_calls(void) { return extend_calls; }

void stub_last_extend(uint32_t *version, uint64_t *index, uint8_t *data, uint32_t *data_size) {
    *version = last_version;
    *index = last_rtmr_index;
    memcpy(data, last_extend_data, sizeof(last_extend_data));
    *data_size = last_event_data_size;
}

uint32_t tdx_att_get_quote(const tdx_report_data_t *report_data, const tdx_uuid_t *key_ids,
                           uint32_t key_id_count, tdx_uuid_t *selected_key_id,
                           uint8_t **quote, uint32_t *quote_size, uint32_t flags) {
    (void)key_ids;
    if (!report_data || !quote || flags != 0 || key_id_count != 0) return 0x0002;
    if (next_result != 0) return next_result;
    if (template_size < REPORT_DATA_OFFSET_V4 + 64) return 0x0001;
    uint8_t *out = malloc(template_size);
    memcpy(out, template_quote, template_size);
    memcpy(out + REPORT_DATA_OFFSET_V4, report_data->d, 64);
    if (selected_key_id) *selected_key_id = ecdsa_p256_key_id;
    *quote = out;
    if (quote_size) *quote_size = template_size;
    outstanding_quotes++;
    return 0;
}

uint32_t tdx_att_free_quote(uint8_t *quote) {
    if (quote) {
        free(quote);
        outstanding_quotes--;
    }
    return 0;
}

uint32_t tdx_att_extend(const tdx_rtmr_event_t *event) {
    extend_calls++;
    if (!event) return 0x0002;
    last_version = event->version;
    last_rtmr_index = event->rtmr_index;
    memcpy(last_extend_data, event->extend_data, sizeof(last_extend_data));
    last_event_data_size = event->event_data_size;
    if (next_result != 0) return next_result;
    if (event->version != 1) return 0x0002;
    if (event->rtmr_index != 2 && event->rtmr_index != 3) return 0x000b;
    return 0;
}
