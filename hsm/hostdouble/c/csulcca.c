/* libcsulcca.so double: the CCA verbs with the parameter lists of IBM's
 * CCA Basic Services Reference (Linux on IBM Z) and openCryptoki's
 * csulincl.h, as summarised in host-libraries.md §1. Every parameter is a
 * pointer; the functions return nothing; return and reason codes come
 * back through the first two parameters (§1.3). The checks live in the
 * server (hsm/hostdouble/cca.go); see hostdouble.h. */
#include "hostdouble.h"

#include <stdio.h>
#include <stdlib.h>

typedef unsigned char uchar;

#define EXPORT __attribute__((visibility("default")))

static void begin(struct hd_req *r, const char *verb, long *rc, long *rs, long *edl, uchar *ed)
{
	if (!rc || !rs) {
		/* The real library writes through both; a NULL is a crash there. */
		fprintf(stderr, "libcsulcca double: %s called with a NULL return_code or reason_code\n", verb);
		abort();
	}
	hd_begin(r, HD_LIB_CCA, verb);
	hd_arg_long(r, rc);
	hd_arg_long(r, rs);
	/* exit data: IBM says exits are unsupported; NULL/NULL, a pointer to
	 * 0 with a buffer, or a pointer to 0 with NULL are all accepted
	 * (§1.3). The buffer is never read. */
	hd_arg_long(r, edl);
	hd_arg_in(r, ed, 0);
}

static void finish(struct hd_req *r, long *rc, long *rs)
{
	uint64_t ret;
	if (hd_call(r, &ret) < 0) {
		*rc = 12;
		*rs = 338;
	}
}

/* A buffer whose length is *lenp. */
static long lenof(const long *lenp)
{
	return lenp ? *lenp : -1;
}

static void rules(struct hd_req *r, long *count, uchar *rule_array)
{
	hd_arg_long(r, count);
	long n = count ? *count : -1;
	hd_arg_in(r, rule_array, n >= 0 && n <= 64 ? n * 8 : -1);
}

/* The length of a simulator DATA token: its 64-byte header and the
 * sealed key (hostdouble.h). */
static long data_token_len(const uchar *tok)
{
	if (!tok)
		return -1;
	long kb = (long)tok[58] << 8 | tok[59];
	if (kb > 32)
		return 64;
	return 64 + 28 + kb;
}

#define COMMON long *rc, long *rs, long *edl, uchar *ed
#define BEGIN(verb)                                                                                                    \
	struct hd_req r;                                                                                               \
	begin(&r, verb, rc, rs, edl, ed)
#define FINISH() finish(&r, rc, rs)

/* §1.2 */
EXPORT void CSUACFV(COMMON, long *version_data_length, uchar *version_data)
{
	BEGIN("CSUACFV");
	hd_arg_long(&r, version_data_length);
	hd_arg_out(&r, version_data, lenof(version_data_length));
	FINISH();
}

/* §1.4, §1.5. The verb writes its keywords back into the rule array; the
 * double writes at most 16 (128 bytes, zkey's buffer; OCK's has 256). */
EXPORT void CSUACFQ(COMMON, long *rule_array_count, uchar *rule_array, long *verb_data_length, uchar *verb_data)
{
	BEGIN("CSUACFQ");
	hd_arg_long(&r, rule_array_count);
	long n = rule_array_count ? *rule_array_count : -1;
	long in = n >= 0 && n <= 64 ? n * 8 : -1;
	hd_arg_inout(&r, rule_array, in, in > 128 ? in : 128);
	hd_arg_long(&r, verb_data_length);
	hd_arg_inout(&r, verb_data, lenof(verb_data_length), lenof(verb_data_length));
	FINISH();
}

static void resource_verb(const char *verb, COMMON, long *rule_array_count, uchar *rule_array,
			  long *resource_name_length, uchar *resource_name)
{
	BEGIN(verb);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, resource_name_length);
	hd_arg_in(&r, resource_name, lenof(resource_name_length));
	FINISH();
}

EXPORT void CSUACRA(COMMON, long *rule_array_count, uchar *rule_array, long *resource_name_length, uchar *resource_name)
{
	resource_verb("CSUACRA", rc, rs, edl, ed, rule_array_count, rule_array, resource_name_length, resource_name);
}

EXPORT void CSUACRD(COMMON, long *rule_array_count, uchar *rule_array, long *resource_name_length, uchar *resource_name)
{
	resource_verb("CSUACRD", rc, rs, edl, ed, rule_array_count, rule_array, resource_name_length, resource_name);
}

/* §1.6 */
EXPORT void CSNBKTB2(COMMON, long *rule_array_count, uchar *rule_array, long *clear_key_bit_length,
		     uchar *clear_key_value, long *key_name_length, uchar *key_name, long *user_associated_data_length,
		     uchar *user_associated_data, long *token_data_length, uchar *token_data, long *reserved_length,
		     uchar *reserved, long *target_key_token_length, uchar *target_key_token)
{
	BEGIN("CSNBKTB2");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, clear_key_bit_length);
	long bits = lenof(clear_key_bit_length);
	hd_arg_in(&r, clear_key_value, bits < 0 ? -1 : (bits + 7) / 8);
	hd_arg_long(&r, key_name_length);
	hd_arg_in(&r, key_name, lenof(key_name_length));
	hd_arg_long(&r, user_associated_data_length);
	hd_arg_in(&r, user_associated_data, lenof(user_associated_data_length));
	hd_arg_long(&r, token_data_length);
	hd_arg_in(&r, token_data, lenof(token_data_length));
	hd_arg_long(&r, reserved_length);
	hd_arg_in(&r, reserved, lenof(reserved_length));
	hd_arg_long(&r, target_key_token_length);
	hd_arg_out(&r, target_key_token, lenof(target_key_token_length));
	FINISH();
}

EXPORT void CSNBKGN2(COMMON, long *rule_array_count, uchar *rule_array, long *clear_key_bit_length,
		     uchar *key_type_1, uchar *key_type_2, long *key_name_1_length, uchar *key_name_1,
		     long *key_name_2_length, uchar *key_name_2, long *user_associated_data_1_length,
		     uchar *user_associated_data_1, long *user_associated_data_2_length, uchar *user_associated_data_2,
		     long *kek_key_identifier_1_length, uchar *kek_key_identifier_1, long *kek_key_identifier_2_length,
		     uchar *kek_key_identifier_2, long *generated_key_identifier_1_length,
		     uchar *generated_key_identifier_1, long *generated_key_identifier_2_length,
		     uchar *generated_key_identifier_2)
{
	BEGIN("CSNBKGN2");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, clear_key_bit_length);
	hd_arg_in(&r, key_type_1, 8);
	hd_arg_in(&r, key_type_2, 8);
	hd_arg_long(&r, key_name_1_length);
	hd_arg_in(&r, key_name_1, lenof(key_name_1_length));
	hd_arg_long(&r, key_name_2_length);
	hd_arg_in(&r, key_name_2, lenof(key_name_2_length));
	hd_arg_long(&r, user_associated_data_1_length);
	hd_arg_in(&r, user_associated_data_1, lenof(user_associated_data_1_length));
	hd_arg_long(&r, user_associated_data_2_length);
	hd_arg_in(&r, user_associated_data_2, lenof(user_associated_data_2_length));
	hd_arg_long(&r, kek_key_identifier_1_length);
	hd_arg_in(&r, kek_key_identifier_1, lenof(kek_key_identifier_1_length));
	hd_arg_long(&r, kek_key_identifier_2_length);
	hd_arg_in(&r, kek_key_identifier_2, lenof(kek_key_identifier_2_length));
	hd_arg_long(&r, generated_key_identifier_1_length);
	hd_arg_inout(&r, generated_key_identifier_1, lenof(generated_key_identifier_1_length),
		     lenof(generated_key_identifier_1_length));
	hd_arg_long(&r, generated_key_identifier_2_length);
	hd_arg_inout(&r, generated_key_identifier_2, lenof(generated_key_identifier_2_length),
		     lenof(generated_key_identifier_2_length));
	FINISH();
}

EXPORT void CSNBKGN(COMMON, uchar *key_form, uchar *key_length, uchar *key_type_1, uchar *key_type_2,
		    uchar *kek_key_identifier_1, uchar *kek_key_identifier_2, uchar *generated_key_identifier_1,
		    uchar *generated_key_identifier_2)
{
	BEGIN("CSNBKGN");
	hd_arg_in(&r, key_form, 8);
	hd_arg_in(&r, key_length, 8);
	hd_arg_in(&r, key_type_1, 8);
	hd_arg_in(&r, key_type_2, 8);
	hd_arg_in(&r, kek_key_identifier_1, 64);
	hd_arg_in(&r, kek_key_identifier_2, 64);
	hd_arg_out(&r, generated_key_identifier_1, HD_CCA_DES_TOKEN_LEN);
	hd_arg_out(&r, generated_key_identifier_2, HD_CCA_DES_TOKEN_LEN);
	FINISH();
}

/* §1.7 */
EXPORT void CSNDPKB(COMMON, long *rule_array_count, uchar *rule_array, long *key_values_structure_length,
		    uchar *key_values_structure, long *key_name_ln, uchar *key_name, long *customer_data_length,
		    uchar *customer_data, long *reserved_2_length, uchar *reserved_2, long *reserved_3_length,
		    uchar *reserved_3, long *reserved_4_length, uchar *reserved_4, long *reserved_5_length,
		    uchar *reserved_5, long *token_length, uchar *token)
{
	BEGIN("CSNDPKB");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, key_values_structure_length);
	hd_arg_in(&r, key_values_structure, lenof(key_values_structure_length));
	hd_arg_long(&r, key_name_ln);
	hd_arg_in(&r, key_name, lenof(key_name_ln));
	hd_arg_long(&r, customer_data_length);
	hd_arg_in(&r, customer_data, lenof(customer_data_length));
	hd_arg_long(&r, reserved_2_length);
	hd_arg_in(&r, reserved_2, lenof(reserved_2_length));
	hd_arg_long(&r, reserved_3_length);
	hd_arg_in(&r, reserved_3, lenof(reserved_3_length));
	hd_arg_long(&r, reserved_4_length);
	hd_arg_in(&r, reserved_4, lenof(reserved_4_length));
	hd_arg_long(&r, reserved_5_length);
	hd_arg_in(&r, reserved_5, lenof(reserved_5_length));
	hd_arg_long(&r, token_length);
	hd_arg_out(&r, token, lenof(token_length));
	FINISH();
}

EXPORT void CSNDPKG(COMMON, long *rule_array_count, uchar *rule_array, long *regeneration_data_length,
		    uchar *regeneration_data, long *skeleton_key_token_length, uchar *skeleton_key_token,
		    uchar *transport_key_identifier, long *generated_key_identifier_length,
		    uchar *generated_key_identifier)
{
	BEGIN("CSNDPKG");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, regeneration_data_length);
	hd_arg_in(&r, regeneration_data, lenof(regeneration_data_length));
	hd_arg_long(&r, skeleton_key_token_length);
	hd_arg_in(&r, skeleton_key_token, lenof(skeleton_key_token_length));
	hd_arg_in(&r, transport_key_identifier, 64);
	hd_arg_long(&r, generated_key_identifier_length);
	hd_arg_out(&r, generated_key_identifier, lenof(generated_key_identifier_length));
	FINISH();
}

EXPORT void CSNDPKX(COMMON, long *rule_array_count, uchar *rule_array, long *source_key_identifier_length,
		    uchar *source_key_identifier, long *target_key_token_length, uchar *target_key_token)
{
	BEGIN("CSNDPKX");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, source_key_identifier_length);
	hd_arg_in(&r, source_key_identifier, lenof(source_key_identifier_length));
	hd_arg_long(&r, target_key_token_length);
	hd_arg_out(&r, target_key_token, lenof(target_key_token_length));
	FINISH();
}

/* §1.14 */
EXPORT void CSNBKTC(COMMON, long *rule_array_count, uchar *rule_array, uchar *key_identifier)
{
	BEGIN("CSNBKTC");
	rules(&r, rule_array_count, rule_array);
	long n = data_token_len(key_identifier);
	hd_arg_inout(&r, key_identifier, n, n);
	FINISH();
}

static void ktc_var(const char *verb, COMMON, long *rule_array_count, uchar *rule_array, long *key_identifier_length,
		    uchar *key_identifier)
{
	BEGIN(verb);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, key_identifier_length);
	hd_arg_inout(&r, key_identifier, lenof(key_identifier_length), lenof(key_identifier_length));
	FINISH();
}

EXPORT void CSNBKTC2(COMMON, long *rule_array_count, uchar *rule_array, long *key_identifier_length,
		     uchar *key_identifier)
{
	ktc_var("CSNBKTC2", rc, rs, edl, ed, rule_array_count, rule_array, key_identifier_length, key_identifier);
}

EXPORT void CSNDKTC(COMMON, long *rule_array_count, uchar *rule_array, long *key_id_length, uchar *key_id)
{
	ktc_var("CSNDKTC", rc, rs, edl, ed, rule_array_count, rule_array, key_id_length, key_id);
}

/* §1.9 */
static void sae_sad(const char *verb, int enc, COMMON, long *rule_array_count, uchar *rule_array, long *key_length,
		    uchar *key_identifier, long *key_parms_length, uchar *key_parms, long *block_size,
		    long *initialization_vector_length, uchar *initialization_vector, long *chain_data_length,
		    uchar *chain_data, long *in_length, uchar *in, long *out_length, uchar *out,
		    long *optional_data_length, uchar *optional_data)
{
	BEGIN(verb);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, key_length);
	hd_arg_in(&r, key_identifier, lenof(key_length));
	hd_arg_long(&r, key_parms_length);
	hd_arg_inout(&r, key_parms, lenof(key_parms_length), lenof(key_parms_length));
	hd_arg_long(&r, block_size);
	hd_arg_long(&r, initialization_vector_length);
	hd_arg_in(&r, initialization_vector, lenof(initialization_vector_length));
	hd_arg_long(&r, chain_data_length);
	hd_arg_inout(&r, chain_data, lenof(chain_data_length), lenof(chain_data_length));
	hd_arg_long(&r, in_length);
	hd_arg_in(&r, in, lenof(in_length));
	hd_arg_long(&r, out_length);
	hd_arg_out(&r, out, lenof(out_length));
	hd_arg_long(&r, optional_data_length);
	hd_arg_in(&r, optional_data, lenof(optional_data_length));
	(void)enc;
	FINISH();
}

EXPORT void CSNBSAE(COMMON, long *rule_array_count, uchar *rule_array, long *key_length, uchar *key_identifier,
		    long *key_parms_length, uchar *key_parms, long *block_size, long *initialization_vector_length,
		    uchar *initialization_vector, long *chain_data_length, uchar *chain_data, long *clear_text_length,
		    uchar *clear_text, long *cipher_text_length, uchar *cipher_text, long *optional_data_length,
		    uchar *optional_data)
{
	sae_sad("CSNBSAE", 1, rc, rs, edl, ed, rule_array_count, rule_array, key_length, key_identifier,
		key_parms_length, key_parms, block_size, initialization_vector_length, initialization_vector,
		chain_data_length, chain_data, clear_text_length, clear_text, cipher_text_length, cipher_text,
		optional_data_length, optional_data);
}

EXPORT void CSNBSAD(COMMON, long *rule_array_count, uchar *rule_array, long *key_length, uchar *key_identifier,
		    long *key_parms_length, uchar *key_parms, long *block_size, long *initialization_vector_length,
		    uchar *initialization_vector, long *chain_data_length, uchar *chain_data, long *cipher_text_length,
		    uchar *cipher_text, long *clear_text_length, uchar *clear_text, long *optional_data_length,
		    uchar *optional_data)
{
	sae_sad("CSNBSAD", 0, rc, rs, edl, ed, rule_array_count, rule_array, key_length, key_identifier,
		key_parms_length, key_parms, block_size, initialization_vector_length, initialization_vector,
		chain_data_length, chain_data, cipher_text_length, cipher_text, clear_text_length, clear_text,
		optional_data_length, optional_data);
}

/* §1.10: the key is a fixed-size DATA token (hostdouble.h); the chaining
 * vector is 18 bytes; the output is text_length bytes. */
EXPORT void CSNBENC(COMMON, uchar *key_identifier, long *text_length, uchar *clear_text, uchar *initialization_vector,
		    long *rule_array_count, uchar *rule_array, long *pad_character, uchar *chaining_vector,
		    uchar *cipher_text)
{
	BEGIN("CSNBENC");
	hd_arg_in(&r, key_identifier, data_token_len(key_identifier));
	hd_arg_long(&r, text_length);
	hd_arg_in(&r, clear_text, lenof(text_length));
	hd_arg_in(&r, initialization_vector, 8);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, pad_character);
	hd_arg_inout(&r, chaining_vector, 18, 18);
	hd_arg_out(&r, cipher_text, lenof(text_length));
	FINISH();
}

EXPORT void CSNBDEC(COMMON, uchar *key_identifier, long *text_length, uchar *cipher_text, uchar *initialization_vector,
		    long *rule_array_count, uchar *rule_array, uchar *chaining_vector, uchar *clear_text)
{
	BEGIN("CSNBDEC");
	hd_arg_in(&r, key_identifier, data_token_len(key_identifier));
	hd_arg_long(&r, text_length);
	hd_arg_in(&r, cipher_text, lenof(text_length));
	hd_arg_in(&r, initialization_vector, 8);
	rules(&r, rule_array_count, rule_array);
	hd_arg_inout(&r, chaining_vector, 18, 18);
	hd_arg_out(&r, clear_text, lenof(text_length));
	FINISH();
}

/* §1.11 */
static void pke_pkd(const char *verb, COMMON, long *rule_array_count, uchar *rule_array, long *in_length, uchar *in,
		    long *data_struct_length, uchar *data_struct, long *key_length, uchar *key, long *out_length,
		    uchar *out)
{
	BEGIN(verb);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, in_length);
	hd_arg_in(&r, in, lenof(in_length));
	hd_arg_long(&r, data_struct_length);
	hd_arg_in(&r, data_struct, lenof(data_struct_length));
	hd_arg_long(&r, key_length);
	hd_arg_in(&r, key, lenof(key_length));
	hd_arg_long(&r, out_length);
	hd_arg_out(&r, out, lenof(out_length));
	FINISH();
}

EXPORT void CSNDPKE(COMMON, long *rule_array_count, uchar *rule_array, long *key_value_length, uchar *key_value,
		    long *data_struct_length, uchar *data_struct, long *rsa_public_key_length, uchar *rsa_public_key,
		    long *rsa_encipher_length, uchar *rsa_encipher)
{
	pke_pkd("CSNDPKE", rc, rs, edl, ed, rule_array_count, rule_array, key_value_length, key_value,
		data_struct_length, data_struct, rsa_public_key_length, rsa_public_key, rsa_encipher_length,
		rsa_encipher);
}

EXPORT void CSNDPKD(COMMON, long *rule_array_count, uchar *rule_array, long *enciphered_key_length,
		    uchar *enciphered_key, long *data_struct_length, uchar *data_struct, long *private_key_length,
		    uchar *private_key, long *clear_key_length, uchar *clear_key)
{
	pke_pkd("CSNDPKD", rc, rs, edl, ed, rule_array_count, rule_array, enciphered_key_length, enciphered_key,
		data_struct_length, data_struct, private_key_length, private_key, clear_key_length, clear_key);
}

/* §1.12 */
EXPORT void CSNDDSG(COMMON, long *rule_array_count, uchar *rule_array, long *pka_private_key_id_length,
		    uchar *pka_private_key_id, long *hash_length, uchar *hash, long *signature_field_length,
		    long *signature_bit_length, uchar *signature_field)
{
	BEGIN("CSNDDSG");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, pka_private_key_id_length);
	hd_arg_in(&r, pka_private_key_id, lenof(pka_private_key_id_length));
	hd_arg_long(&r, hash_length);
	hd_arg_in(&r, hash, lenof(hash_length));
	hd_arg_long(&r, signature_field_length);
	hd_arg_long(&r, signature_bit_length);
	hd_arg_out(&r, signature_field, lenof(signature_field_length));
	FINISH();
}

EXPORT void CSNDDSV(COMMON, long *rule_array_count, uchar *rule_array, long *pka_public_key_id_length,
		    uchar *pka_public_key_id, long *hash_length, uchar *hash, long *signature_field_length,
		    uchar *signature_field)
{
	BEGIN("CSNDDSV");
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, pka_public_key_id_length);
	hd_arg_in(&r, pka_public_key_id, lenof(pka_public_key_id_length));
	hd_arg_long(&r, hash_length);
	hd_arg_in(&r, hash, lenof(hash_length));
	hd_arg_long(&r, signature_field_length);
	hd_arg_in(&r, signature_field, lenof(signature_field_length));
	FINISH();
}

static void hmac_verb(const char *verb, int gen, COMMON, long *rule_array_count, uchar *rule_array,
		      long *key_identifier_length, uchar *key_identifier, long *message_text_length,
		      uchar *message_text, long *chaining_vector_length, uchar *chaining_vector, long *mac_length,
		      uchar *mac)
{
	BEGIN(verb);
	rules(&r, rule_array_count, rule_array);
	hd_arg_long(&r, key_identifier_length);
	hd_arg_in(&r, key_identifier, lenof(key_identifier_length));
	hd_arg_long(&r, message_text_length);
	hd_arg_in(&r, message_text, lenof(message_text_length));
	hd_arg_long(&r, chaining_vector_length);
	hd_arg_inout(&r, chaining_vector, lenof(chaining_vector_length), lenof(chaining_vector_length));
	hd_arg_long(&r, mac_length);
	if (gen)
		hd_arg_out(&r, mac, lenof(mac_length));
	else
		hd_arg_in(&r, mac, lenof(mac_length));
	FINISH();
}

EXPORT void CSNBHMG(COMMON, long *rule_array_count, uchar *rule_array, long *key_identifier_length,
		    uchar *key_identifier, long *message_text_length, uchar *message_text, long *chaining_vector_length,
		    uchar *chaining_vector, long *mac_length, uchar *mac_text)
{
	hmac_verb("CSNBHMG", 1, rc, rs, edl, ed, rule_array_count, rule_array, key_identifier_length, key_identifier,
		  message_text_length, message_text, chaining_vector_length, chaining_vector, mac_length, mac_text);
}

EXPORT void CSNBHMV(COMMON, long *rule_array_count, uchar *rule_array, long *key_identifier_length,
		    uchar *key_identifier, long *message_text_length, uchar *message_text, long *chaining_vector_length,
		    uchar *chaining_vector, long *mac_length, uchar *mac_text)
{
	hmac_verb("CSNBHMV", 0, rc, rs, edl, ed, rule_array_count, rule_array, key_identifier_length, key_identifier,
		  message_text_length, message_text, chaining_vector_length, chaining_vector, mac_length, mac_text);
}

/* The other verbs openCryptoki resolves (§1.1: all 97 must exist). The
 * double does not implement them: they answer 12/338 through the server,
 * having read only the four common parameters. */
#define UNIMPLEMENTED(verb)                                                                                            \
	EXPORT void verb(COMMON)                                                                                       \
	{                                                                                                              \
		BEGIN(#verb);                                                                                          \
		FINISH();                                                                                              \
	}

UNIMPLEMENTED(CSNBCKI)
UNIMPLEMENTED(CSNBCKM)
UNIMPLEMENTED(CSNBDKX)
UNIMPLEMENTED(CSNBDKM)
UNIMPLEMENTED(CSNBKEX)
UNIMPLEMENTED(CSNBKIM)
UNIMPLEMENTED(CSNBKPI)
UNIMPLEMENTED(CSNBKPI2)
UNIMPLEMENTED(CSNBKSI)
UNIMPLEMENTED(CSNBKRC)
UNIMPLEMENTED(CSNBAKRC)
UNIMPLEMENTED(CSNBKRD)
UNIMPLEMENTED(CSNBKRL)
UNIMPLEMENTED(CSNBKRR)
UNIMPLEMENTED(CSNBKRW)
UNIMPLEMENTED(CSNDKRC)
UNIMPLEMENTED(CSNDKRD)
UNIMPLEMENTED(CSNDKRL)
UNIMPLEMENTED(CSNDKRR)
UNIMPLEMENTED(CSNDKRW)
UNIMPLEMENTED(CSNBKYT)
UNIMPLEMENTED(CSNBKYTX)
UNIMPLEMENTED(CSNBKTR)
UNIMPLEMENTED(CSNBRNG)
UNIMPLEMENTED(CSNBRNGL)
UNIMPLEMENTED(CSNBMGN)
UNIMPLEMENTED(CSNBMVR)
UNIMPLEMENTED(CSNBKTB)
UNIMPLEMENTED(CSNBOWH)
UNIMPLEMENTED(CSNDPKI)
UNIMPLEMENTED(CSNDSYI)
UNIMPLEMENTED(CSNDSYI2)
UNIMPLEMENTED(CSNDSYX)
UNIMPLEMENTED(CSUACFC)
UNIMPLEMENTED(CSNDSBC)
UNIMPLEMENTED(CSNDSBD)
UNIMPLEMENTED(CSUALCT)
UNIMPLEMENTED(CSUAACM)
UNIMPLEMENTED(CSUAACI)
UNIMPLEMENTED(CSNDPKH)
UNIMPLEMENTED(CSNDPKR)
UNIMPLEMENTED(CSUAMKD)
UNIMPLEMENTED(CSNDRKD)
UNIMPLEMENTED(CSNDRKL)
UNIMPLEMENTED(CSNDSYG)
UNIMPLEMENTED(CSNBPTR)
UNIMPLEMENTED(CSNBCPE)
UNIMPLEMENTED(CSNBCPA)
UNIMPLEMENTED(CSNBPGN)
UNIMPLEMENTED(CSNBPVR)
UNIMPLEMENTED(CSNBDKG)
UNIMPLEMENTED(CSNBEPG)
UNIMPLEMENTED(CSNBCVE)
UNIMPLEMENTED(CSNBCSG)
UNIMPLEMENTED(CSNBCSV)
UNIMPLEMENTED(CSNBCVG)
UNIMPLEMENTED(CSNBKTP)
UNIMPLEMENTED(CSNBPEX)
UNIMPLEMENTED(CSNBPEXX)
UNIMPLEMENTED(CSUARNT)
UNIMPLEMENTED(CSNBCVT)
UNIMPLEMENTED(CSNBMDG)
UNIMPLEMENTED(CSNBTRV)
UNIMPLEMENTED(CSNBSKY)
UNIMPLEMENTED(CSNBSPN)
UNIMPLEMENTED(CSNBPCU)
UNIMPLEMENTED(CSNDEDH)
UNIMPLEMENTED(CSUAPRB)
UNIMPLEMENTED(CSNDTBC)
UNIMPLEMENTED(CSNDRKX)
UNIMPLEMENTED(CSNBKET)
UNIMPLEMENTED(CSNBCTT2)
UNIMPLEMENTED(CSNBRKA)
UNIMPLEMENTED(CSNBKTR2)
