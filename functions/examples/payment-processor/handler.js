// payment-processor (lang: node18): validates a JSON payment {amount, currency} and answers
// 201 with a receipt, or 400 with the reason.
'use strict';

const crypto = require('crypto');

const CURRENCIES = new Set(['EUR', 'USD', 'GBP', 'CHF', 'JPY']);

module.exports = async (event, context) => {
    const payment = event.body;
    const problem = validate(payment);
    if (problem) {
        return context
            .status(400)
            .headers({ 'Content-Type': 'application/json' })
            .succeed({ error: problem });
    }

    const receipt = {
        id: `rcpt_${crypto.randomUUID()}`,
        amount: Math.round(payment.amount * 100) / 100,
        currency: payment.currency.toUpperCase(),
        status: 'accepted',
        created_at: new Date().toISOString(),
    };
    console.log(`accepted ${receipt.amount} ${receipt.currency} as ${receipt.id}`);
    return context
        .status(201)
        .headers({ 'Content-Type': 'application/json' })
        .succeed(receipt);
};

function validate(payment) {
    // The template parses application/json bodies; anything else arrives as a string or Buffer.
    if (!payment || typeof payment !== 'object' || Buffer.isBuffer(payment) || Array.isArray(payment)) {
        return 'send a JSON object {"amount": 12.5, "currency": "EUR"} with Content-Type: application/json';
    }
    if (typeof payment.amount !== 'number' || !Number.isFinite(payment.amount) || payment.amount <= 0) {
        return 'amount must be a positive number';
    }
    if (typeof payment.currency !== 'string' || !CURRENCIES.has(payment.currency.toUpperCase())) {
        return `currency must be one of ${[...CURRENCIES].join(', ')}`;
    }
    return null;
}
